import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder
from vqkeras.layers.diagonal_gaussian import DiagonalGaussian
from vqkeras.layers.gaussian_sampler import GaussianSampler
from vqkeras.models.vae import VAE

LOGGED = ["loss", "reconstruction_loss", "kl_loss", "kl"]


def small_vae(channels=1, latent_dim=4, kl_weight=1.0, seed=0):
    """16x16 images to a 4x4 grid of `latent_dim` Gaussian channels."""
    return VAE(
        encoder=ConvEncoder(2 * latent_dim, channels=(8, 16), num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=(16, 8), num_residual_blocks=1),
        kl_weight=kl_weight,
        sampler=GaussianSampler(seed=seed),
    )


def numpy_kl(mean, logvar):
    return 0.5 * np.sum(mean**2 + np.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))


def test_fit_lowers_reconstruction_loss_and_logs_every_term():
    images = blob_images(256)
    model = small_vae(kl_weight=0.1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    seed_state = to_numpy(model.sampler.seed_generator.state).copy()
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = model.fit(images, epochs=4, batch_size=32, validation_data=(images[:64],), verbose=0)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)

    assert sorted(history.history) == sorted(LOGGED + [f"val_{name}" for name in LOGGED])
    assert after["reconstruction_loss"] < 0.6 * before["reconstruction_loss"]
    np.testing.assert_allclose(
        after["loss"], after["reconstruction_loss"] + after["kl_loss"], rtol=1e-5
    )
    # kl_loss = kl_weight * KL / P with P = 16 * 16 * 1 pixel values.
    np.testing.assert_allclose(after["kl_loss"], 0.1 * after["kl"] / 256, rtol=1e-4)
    assert after["kl"] > 0
    # Every training step drew fresh noise: the generator's state moved on
    # (on JAX it lives in the stateless train step's non-trainable state).
    assert not np.array_equal(to_numpy(model.sampler.seed_generator.state), seed_state)


def test_loss_terms_match_numpy():
    images = blob_images(8)
    model = small_vae(kl_weight=2.0)
    terms, outputs = model.compute_losses(images, training=False)
    posterior = model.encode(images)
    mean, logvar = to_numpy(posterior.mean), to_numpy(posterior.logvar)
    reconstruction = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        to_numpy(terms["reconstruction_loss"]),
        np.mean(np.square(reconstruction - images / 255.0)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        to_numpy(terms["kl_loss"]), 2.0 * numpy_kl(mean, logvar).mean() / 256, rtol=1e-5
    )
    np.testing.assert_allclose(to_numpy(outputs["kl"]), numpy_kl(mean, logvar), rtol=1e-5)


def test_training_samples_and_inference_uses_the_mean():
    images = blob_images(8)
    model = small_vae()
    mean = to_numpy(model.encode(images).mode())
    first = to_numpy(model.compute_outputs(images, training=True)["latents"])
    second = to_numpy(model.compute_outputs(images, training=True)["latents"])
    assert not np.allclose(first, second)
    np.testing.assert_allclose(
        to_numpy(model.compute_outputs(images, training=False)["latents"]), mean, atol=1e-6
    )


def test_encode_gives_the_posterior_and_decode_shapes():
    images = blob_images(8, channels=3)
    model = small_vae(channels=3, latent_dim=5)
    posterior = model.encode(images)
    assert isinstance(posterior, DiagonalGaussian)
    assert tuple(posterior.mean.shape) == (8, 4, 4, 5) and model.latent_dim == 5
    assert tuple(posterior.sample(seed=0).shape) == (8, 4, 4, 5)
    decoded = to_numpy(model.decode(posterior.mode()))
    assert decoded.shape == (8, 16, 16, 3) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, model.predict(images, verbose=0), atol=1e-5)
    prior_samples = to_numpy(model.decode(keras.random.normal((2, 4, 4, 5), seed=1)))
    assert prior_samples.shape == (2, 16, 16, 3)


def test_config_round_trip_keeps_kl_weight_and_the_sampler_seed():
    config = small_vae(kl_weight=0.5, seed=3).get_config()
    assert config["kl_weight"] == 0.5 and "beta" not in config
    assert config["sampler"]["config"]["seed"] == 3
    assert VAE.from_config(config).get_config() == config


def test_the_deprecated_beta_still_loads_as_kl_weight():
    config = small_vae(kl_weight=0.5).get_config()
    old = dict(config)
    old["beta"] = old.pop("kl_weight")
    with pytest.warns(DeprecationWarning, match="`beta` is deprecated: use `kl_weight`"):
        clone = VAE.from_config(old)
    assert clone.kl_weight == 0.5 and clone.get_config() == config
    with pytest.raises(ValueError, match="Received both beta=0.5 and kl_weight=0.5"):
        VAE(ConvEncoder(8), ConvDecoder(1), kl_weight=0.5, beta=0.5)


def test_bad_latents_and_arguments_get_clear_errors():
    model = small_vae(latent_dim=4)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 4\).*\(2, 4, 4, 8\)"):
        model.decode(np.zeros((2, 4, 4, 8), "float32"))
    with pytest.raises(TypeError, match=r"float latents.*int32"):
        model.decode(np.zeros((2, 4, 4, 4), "int32"))
    with pytest.raises(ValueError, match=r"even number of channels.*Received: 5 channels"):
        VAE(ConvEncoder(5), ConvDecoder(1))
    with pytest.raises(ValueError, match=r"`kl_weight`.*Received: kl_weight=-1"):
        VAE(ConvEncoder(8), ConvDecoder(1), kl_weight=-1)
    with pytest.raises(TypeError, match=r"`sampler`.*GaussianSampler.*Dense"):
        VAE(ConvEncoder(8), ConvDecoder(1), sampler=keras.layers.Dense(4))
    with pytest.raises(TypeError, match=r"`encoder`.*downsampling_factor"):
        VAE(keras.layers.Dense(8), ConvDecoder(1))
