import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

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
