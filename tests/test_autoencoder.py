import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder
from vqkeras.models.autoencoder import Autoencoder

LOGGED = ["loss", "reconstruction_loss"]


def small_autoencoder(channels=1, latent_dim=4):
    """16x16 images to a 4x4 grid of `latent_dim` channels."""
    return Autoencoder(
        encoder=ConvEncoder(latent_dim, channels=(8, 16), num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=(16, 8), num_residual_blocks=1),
    )


def test_fit_lowers_reconstruction_loss_and_logs_every_term():
    images = blob_images(256)
    model = small_autoencoder()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = model.fit(images, epochs=4, batch_size=32, validation_data=(images[:64],), verbose=0)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)

    assert sorted(history.history) == sorted(LOGGED + [f"val_{name}" for name in LOGGED])
    assert after["reconstruction_loss"] < 0.6 * before["reconstruction_loss"]
    np.testing.assert_allclose(after["loss"], after["reconstruction_loss"], rtol=1e-6)
    # The logged loss is the per-pixel MSE on the [0, 1] scale.
    reconstruction = model.predict(images, verbose=0)
    mse = np.mean(np.square(reconstruction - images / 255.0))
    np.testing.assert_allclose(after["reconstruction_loss"], mse, rtol=1e-4)


def test_encode_decode_shapes_and_round_trip():
    images = blob_images(8, channels=3)
    model = small_autoencoder(channels=3, latent_dim=5)
    latents = model.encode(images)
    assert tuple(latents.shape) == (8, 4, 4, 5) and model.latent_dim == 5
    decoded = to_numpy(model.decode(latents))
    assert decoded.shape == (8, 16, 16, 3) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, model.predict(images, verbose=0), atol=1e-5)
    from_float = model.predict(images.astype("float32") / 255.0, verbose=0)
    np.testing.assert_allclose(from_float, decoded, atol=1e-5)


def test_config_round_trip():
    config = small_autoencoder().get_config()
    assert Autoencoder.from_config(config).get_config() == config
    assert config["encoder"]["config"]["latent_dim"] == 4


def test_bad_latents_and_parts_get_clear_errors():
    model = small_autoencoder(latent_dim=4)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 4\).*\(2, 4, 4, 3\)"):
        model.decode(np.zeros((2, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 4\).*\(2, 16\)"):
        model.decode(np.zeros((2, 16), "float32"))
    with pytest.raises(TypeError, match=r"float latents.*int32"):
        model.decode(np.zeros((2, 4, 4, 4), "int32"))
    with pytest.raises(TypeError, match=r"`encoder`.*downsampling_factor.*Dense"):
        Autoencoder(keras.layers.Dense(4), ConvDecoder(1))
    with pytest.raises(TypeError, match=r"`decoder`.*output_channels.*'conv'"):
        Autoencoder(ConvEncoder(4), "conv")
