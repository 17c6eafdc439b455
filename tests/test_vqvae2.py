import keras
import numpy as np
import pytest
from conftest import assert_weights_load_on_other_backends, blob_images, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer, VectorQuantizer
from vqkeras.models.vqvae2 import VQVAE2


def small_vqvae2(kind="ema", channels=1, bottom_downsamplings=2, top_downsamplings=1):
    """A VQ-VAE-2 small enough for fast tests: 16x16 images to 4x4 bottom and 2x2 top grids."""

    def quantizer(dim, seed):
        if kind == "ema":
            return EMAVectorQuantizer(16, dim, init_from_first_batch=True, seed=seed)
        return VectorQuantizer(16, dim)

    down = (8, 16, 16)[:bottom_downsamplings]
    return VQVAE2(
        bottom_encoder=ConvEncoder(16, channels=down, num_residual_blocks=1),
        top_encoder=ConvEncoder(4, channels=(16,) * top_downsamplings, num_residual_blocks=1),
        top_decoder=ConvDecoder(16, channels=(16,) * top_downsamplings, num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=down[::-1], num_residual_blocks=1),
        bottom_quantizer=quantizer(8, seed=1),
        top_quantizer=quantizer(4, seed=2),
    )


def logged(kind):
    names = ["loss", "reconstruction_loss", "top_commitment_loss", "bottom_commitment_loss"]
    if kind == "gradient":
        names += ["top_codebook_loss", "bottom_codebook_loss"]
    for level in ("top", "bottom"):
        names += [f"{level}_perplexity", f"{level}_codebook_usage"]
    return names


@pytest.mark.parametrize("kind", ["ema", pytest.param("gradient", marks=pytest.mark.slow)])
def test_fit_lowers_reconstruction_loss_and_logs_every_term(kind):
    images = blob_images(256)
    model = small_vqvae2(kind)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = model.fit(images, epochs=4, batch_size=32, verbose=0)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)

    assert sorted(history.history) == sorted(logged(kind))
    assert after["reconstruction_loss"] < 0.6 * before["reconstruction_loss"]
    total = sum(after[name] for name in model.loss_names)
    np.testing.assert_allclose(after["loss"], total, rtol=1e-4)
    for level in ("top", "bottom"):
        assert 0 < after[f"{level}_codebook_usage"] <= 1
        assert 1 <= after[f"{level}_perplexity"] <= 16


@pytest.mark.parametrize(
    "size, bottom_downsamplings, top_downsamplings, bottom, top",
    [(32, 2, 1, 8, 4), (32, 1, 2, 16, 4)],
)
def test_grid_shapes_and_indices_round_trip(
    size, bottom_downsamplings, top_downsamplings, bottom, top
):
    images = blob_images(4, size=size, channels=3)
    model = small_vqvae2("gradient", 3, bottom_downsamplings, top_downsamplings)
    codes = model.encode_indices(images)
    assert sorted(codes) == ["bottom", "top"]
    assert tuple(codes["top"].shape) == (4, top, top)
    assert tuple(codes["bottom"].shape) == (4, bottom, bottom)
    for grid in codes.values():
        assert keras.backend.standardize_dtype(grid.dtype) == "int32"

    latents = model.encode(images)
    assert tuple(latents["top"].shape) == (4, top, top, 4)
    assert tuple(latents["bottom"].shape) == (4, bottom, bottom, 8)
    decoded = to_numpy(model.decode_indices(codes))
    assert decoded.shape == (4, size, size, 3)
    np.testing.assert_allclose(decoded, to_numpy(model.decode(**latents)), atol=1e-5)
    np.testing.assert_allclose(decoded, to_numpy(model(images)), atol=1e-5)
    # The quantized latents are the codebook rows of the indices.
    np.testing.assert_allclose(
        to_numpy(latents["top"]),
        to_numpy(model.top_quantizer.codebook)[to_numpy(codes["top"])],
        atol=1e-6,
    )


def test_bottom_codes_depend_on_the_top_codes():
    images = blob_images(8)
    model = small_vqvae2("gradient")
    codes = model.encode_indices(images)
    # Moving the top codebook changes the conditioning of the bottom level.
    model.top_quantizer.embeddings.assign(model.top_quantizer.embeddings * 5.0)
    assert np.any(to_numpy(model.encode_indices(images)["bottom"]) != to_numpy(codes["bottom"]))


def test_save_and_load_keras_and_weights_files(tmp_path):
    images = blob_images(32)
    model = small_vqvae2()
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, VQVAE2)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    for level, grid in model.encode_indices(images).items():
        np.testing.assert_array_equal(
            to_numpy(loaded.encode_indices(images)[level]), to_numpy(grid)
        )

    model.save_weights(tmp_path / "model.weights.h5")
    clone = VQVAE2.from_config(model.get_config())
    clone.build(images.shape)
    clone.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(clone.predict(images, verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((4, 16, 16), "uint8"), ValueError, r"rank 4.*\(4, 16, 16\)"),
        (np.zeros((4, 16, 16, 3), "uint8"), ValueError, r"1 channel\(s\).*3 channel\(s\)"),
        (np.zeros((4, 12, 12, 1), "uint8"), ValueError, r"multiples of 8.*height 12"),
        (np.zeros((4, 16, 16, 1), "int32"), TypeError, r"uint8 in \[0, 255\].*dtype=int32"),
    ],
)
def test_bad_images_get_clear_errors(images, error, message):
    model = small_vqvae2()
    model.compile(optimizer="adam")
    for call in (
        lambda: model.fit(images, verbose=0),
        lambda: model.predict(images, verbose=0),
        lambda: model.encode_indices(images),
    ):
        with pytest.raises(error, match=message):
            call()


def test_bad_indices_get_clear_errors():
    model = small_vqvae2()
    model.build((None, 16, 16, 1))
    top, bottom = np.zeros((2, 2, 2), "int32"), np.zeros((2, 4, 4), "int32")
    with pytest.raises(ValueError, match=r"top indices.*\(batch, height, width\).*\(2, 4\)"):
        model.decode_indices({"top": np.zeros((2, 4), "int32"), "bottom": bottom})
    with pytest.raises(ValueError, match=r"bottom indices of shape \(2, 4, 4\).*\(2, 2, 2\)"):
        model.decode_indices({"top": top, "bottom": top})
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[16, 16\]"):
        model.decode_indices({"top": np.full((2, 2, 2), 16), "bottom": bottom})
    with pytest.raises(
        ValueError, match=r'a dict of code grids \{"top": ..., "bottom": ...\}.*ndarray'
    ):
        model.decode_indices(top)
    with pytest.raises(TypeError, match=r"integer indices.*float32"):
        model.decode_indices({"top": top, "bottom": bottom.astype("float32")})


def test_mismatched_parts_are_rejected_at_construction():
    parts = dict(
        bottom_encoder=ConvEncoder(16, channels=(8, 16)),
        top_encoder=ConvEncoder(4, channels=(16,)),
        top_decoder=ConvDecoder(16, channels=(16,)),
        decoder=ConvDecoder(1, channels=(16, 8)),
        bottom_quantizer=VectorQuantizer(16, 8),
        top_quantizer=VectorQuantizer(16, 4),
    )
    VQVAE2(**parts)
    bad = [
        ({"top_quantizer": VectorQuantizer(16, 6)}, ValueError, r"latent_dim \(4\).*\(6\)"),
        ({"top_decoder": ConvDecoder(16, channels=(16, 16))}, ValueError, r"\(4\).*\(2\)"),
        ({"decoder": ConvDecoder(1, channels=(8,))}, ValueError, r"decoder's.*\(2\).*\(4\)"),
        ({"bottom_quantizer": keras.layers.Dense(8)}, TypeError, r"bottom_quantizer.*Dense"),
        ({"top_decoder": keras.layers.Dense(8)}, TypeError, r"top_decoder.*upsampling_factor"),
    ]
    for change, error, message in bad:
        with pytest.raises(error, match=message):
            VQVAE2(**{**parts, **change})


# Run in a fresh interpreter per backend: the backend is fixed at import.


@pytest.mark.slow
def test_weights_load_on_the_other_backends(tmp_path):
    images = blob_images(16, channels=3)
    model = small_vqvae2(channels=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)  # move weights and EMA state
    assert_weights_load_on_other_backends(model, images, tmp_path)
