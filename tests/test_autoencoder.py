import keras
import numpy as np
import pytest
from conftest import assert_weights_load_on_other_backends, blob_images, to_numpy

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


def test_save_and_load_keras_file_and_config(tmp_path):
    images = blob_images(32)
    model = small_autoencoder()
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Autoencoder)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(
        to_numpy(loaded.encode(images)), to_numpy(model.encode(images)), atol=1e-6
    )
    loaded.fit(images, epochs=1, batch_size=16, verbose=0)  # still trainable

    config = model.get_config()
    restored = Autoencoder.from_config(config)
    assert restored.get_config() == config
    assert config["encoder"]["config"]["latent_dim"] == 4


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((4, 16, 16), "uint8"), ValueError, r"rank 4.*\(4, 16, 16\)"),
        (np.zeros((4, 16, 16, 3), "uint8"), ValueError, r"1 channel\(s\).*3 channel\(s\)"),
        (np.zeros((4, 18, 18, 1), "uint8"), ValueError, r"multiples of 4.*height 18"),
        (np.zeros((4, 16, 16, 1), "int32"), TypeError, r"uint8 in \[0, 255\].*dtype=int32"),
    ],
)
def test_bad_images_get_clear_errors(images, error, message):
    model = small_autoencoder()
    model.compile(optimizer="adam")
    for call in (
        lambda: model.fit(images, verbose=0),
        lambda: model.predict(images, verbose=0),
        lambda: model.evaluate(images, verbose=0),
        lambda: model.encode(images),
    ):
        with pytest.raises(error, match=message):
            call()


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


# Run in a fresh interpreter per backend: the backend is fixed at import.


@pytest.mark.slow
def test_weights_load_on_the_other_backends(tmp_path):
    images = blob_images(16, channels=3)
    model = small_autoencoder(channels=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)
    assert_weights_load_on_other_backends(model, images, tmp_path)
