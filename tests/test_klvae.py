import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import blob_images, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder
from vqkeras.layers.diagonal_gaussian import DiagonalGaussian
from vqkeras.layers.gaussian_sampler import GaussianSampler
from vqkeras.models.klvae import KLVAE
from vqkeras.models.vae import VAE

LOGGED = ["loss", "reconstruction_loss", "kl_loss", "kl"]


def small_klvae(channels=1, latent_dim=3, **kwargs):
    """16x16 images to a 4x4 grid of `latent_dim` Gaussian channels."""
    return KLVAE(
        encoder=ConvEncoder(2 * latent_dim, channels=(8, 16), num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=(16, 8), num_residual_blocks=1),
        sampler=GaussianSampler(seed=0),
        **kwargs,
    )


def test_fit_lowers_reconstruction_loss_and_logs_every_term():
    images = blob_images(256)
    model = small_klvae()
    assert model.kl_weight == 1e-6 and model.scaling_factor == 1.0
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = model.fit(images, epochs=4, batch_size=32, validation_data=(images[:64],), verbose=0)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)

    assert sorted(history.history) == sorted(LOGGED + [f"val_{name}" for name in LOGGED])
    assert after["reconstruction_loss"] < 0.6 * before["reconstruction_loss"]
    np.testing.assert_allclose(
        after["loss"], after["reconstruction_loss"] + after["kl_loss"], rtol=1e-5
    )
    # kl_loss = kl_weight * KL / P with P = 16 * 16 * 1 pixel values.
    np.testing.assert_allclose(after["kl_loss"], 1e-6 * after["kl"] / 256, rtol=1e-4)


def test_encode_decode_and_the_scaled_latent_space():
    images = blob_images(8, channels=3)
    model = small_klvae(channels=3, latent_dim=4, scaling_factor=0.5)
    posterior = model.encode(images)
    assert isinstance(posterior, DiagonalGaussian)
    assert tuple(posterior.mode().shape) == (8, 4, 4, 4)
    assert tuple(posterior.sample(seed=1).shape) == (8, 4, 4, 4)
    decoded = to_numpy(model.decode(posterior.mode()))
    assert decoded.shape == (8, 16, 16, 3)
    np.testing.assert_allclose(decoded, model.predict(images, verbose=0), atol=1e-5)

    # Only encode_scaled / decode_scaled apply the scaling factor.
    scaled = to_numpy(model.encode_scaled(images, sample=False))
    np.testing.assert_allclose(scaled, 0.5 * to_numpy(posterior.mode()), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(model.decode_scaled(scaled)), decoded, atol=1e-5)
    sampled = to_numpy(model.encode_scaled(images, seed=keras.random.SeedGenerator(2)))
    expected = 0.5 * to_numpy(posterior.sample(seed=keras.random.SeedGenerator(2)))
    np.testing.assert_allclose(sampled, expected, rtol=1e-5, atol=1e-6)


def test_shift_factor_is_subtracted_before_scaling_and_saved(tmp_path):
    images = blob_images(8, channels=3)
    model = small_klvae(channels=3, latent_dim=4, scaling_factor=0.5, shift_factor=0.25)
    mode = to_numpy(model.encode(images).mode())
    scaled = to_numpy(model.encode_scaled(images, sample=False))
    np.testing.assert_allclose(scaled, (mode - 0.25) * 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(model.decode_scaled(scaled)), to_numpy(model.decode(mode)), atol=1e-5
    )
    assert KLVAE.from_config(model.get_config()).shift_factor == 0.25
    with pytest.raises(ValueError, match="shift_factor"):
        model.shift_factor = float("nan")


def test_scaling_factor_is_one_over_the_std_of_the_latents():
    images = blob_images(40)
    model = small_klvae()
    # Posterior means, over several batches (the last one short).
    means = to_numpy(model.encode(images).mode())
    factor = model.compute_scaling_factor(images, batch_size=16, sample=False)
    np.testing.assert_allclose(factor, 1.0 / np.std(means.astype("float64")), rtol=1e-5)
    # The same from a tf.data pipeline of (images, labels).
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(40))).batch(16)
    np.testing.assert_allclose(
        model.compute_scaling_factor(dataset, sample=False), factor, rtol=1e-6
    )
    # Posterior samples, as latent diffusion does, with the same seed.
    samples = to_numpy(model.encode(images).sample(seed=keras.random.SeedGenerator(9)))
    np.testing.assert_allclose(
        model.compute_scaling_factor(images, batch_size=64, seed=9),
        1.0 / np.std(samples.astype("float64")),
        rtol=1e-5,
    )


def test_save_and_load_keep_scaling_factor_and_outputs(tmp_path):
    images = blob_images(32)
    model = small_klvae(kl_weight=1e-4)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=16, verbose=0)
    model.scaling_factor = model.compute_scaling_factor(images, seed=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is KLVAE and isinstance(loaded, VAE)
    assert loaded.scaling_factor == model.scaling_factor and loaded.kl_weight == 1e-4
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(
        to_numpy(loaded.encode_scaled(images, sample=False)),
        to_numpy(model.encode_scaled(images, sample=False)),
        atol=1e-6,
    )

    config = model.get_config()
    assert "beta" not in config
    assert config["kl_weight"] == 1e-4 and config["scaling_factor"] == model.scaling_factor
    assert KLVAE.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kl_weight": -1e-6}, r"`kl_weight`.*Received: kl_weight=-1e-06"),
        ({"scaling_factor": 0.0}, r"`scaling_factor` must be in \(0.0, inf\).*=0.0"),
        ({"scaling_factor": float("nan")}, r"scaling_factor=nan"),
        ({"scaling_factor": "0.18"}, r"number.*scaling_factor='0.18'"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_klvae(**kwargs)


def test_bad_inputs_get_clear_errors():
    model = small_klvae(latent_dim=3)
    with pytest.raises(ValueError, match=r"multiples of 4.*height 18"):
        model.encode(np.zeros((2, 18, 18, 1), "uint8"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\).*\(2, 4, 4, 6\)"):
        model.decode_scaled(np.zeros((2, 4, 4, 6), "float32"))
    with pytest.raises(TypeError, match=r"float latents.*int32"):
        model.decode_scaled(np.zeros((2, 4, 4, 3), "int32"))
    with pytest.raises(ValueError, match=r"1 channel\(s\).*3 channel\(s\)"):
        model.compute_scaling_factor(np.zeros((4, 16, 16, 3), "uint8"))
    with pytest.raises(ValueError, match="holds no images"):
        model.compute_scaling_factor(np.zeros((0, 16, 16, 1), "uint8"))
    with pytest.raises(TypeError, match=r"NumPy array.*iterable of batches.*int"):
        model.compute_scaling_factor(3)
    with pytest.raises(ValueError, match=r"`batch_size`.*Received: batch_size=0"):
        model.compute_scaling_factor(blob_images(4), batch_size=0)
