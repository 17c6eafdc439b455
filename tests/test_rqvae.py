import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer, VectorQuantizer
from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer
from vqkeras.models.rqvae import RQVAE

DEPTH = 3


def small_rqvae(kind="ema", channels=1, depth=DEPTH, latent_dim=8, **rq_kwargs):
    """An RQ-VAE small enough for fast tests: 16x16 images to a 4x4x`depth` code grid."""
    if kind == "ema":
        quantizer = EMAVectorQuantizer(16, latent_dim, init_from_first_batch=True, seed=3)
    else:
        quantizer = VectorQuantizer(16, latent_dim)
    return RQVAE(
        encoder=ConvEncoder(latent_dim, channels=(8, 16), num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=(16, 8), num_residual_blocks=1),
        quantizer=ResidualVectorQuantizer(quantizer, depth, **rq_kwargs),
    )


def test_fit_logs_each_level_and_each_ema_level_refines_the_latents():
    images = blob_images(256)
    model = small_rqvae()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(images, epochs=4, batch_size=32, verbose=0)
    for level in range(DEPTH):
        assert f"perplexity_{level}" in history.history
        assert f"codebook_usage_{level}" in history.history
    # Each EMA level, seeded from its own residuals, refines the latents of a
    # fixed input. (Gradient codebooks all start at the initializer's scale,
    # too coarse for deep residuals this early in training.)
    latents = to_numpy(model.encoder(model.encoder_inputs(images[:64])))
    codes = model.encode_indices(images[:64])
    errors = [
        float(np.mean((to_numpy(model.quantizer.indices_to_codes(codes, depth=k)) - latents) ** 2))
        for k in range(1, DEPTH + 1)
    ]
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:])), errors


def test_indices_round_trip_and_partial_depth_decoding():
    images = blob_images(8, channels=3)
    model = small_rqvae("gradient", channels=3)
    indices = model.encode_indices(images)
    assert tuple(indices.shape) == (8, 4, 4, DEPTH)
    assert keras.backend.standardize_dtype(indices.dtype) == "int32"

    latents = model.encode(images)
    full = to_numpy(model.decode_indices(indices))
    np.testing.assert_allclose(full, to_numpy(model.decode(latents)), atol=1e-5)
    np.testing.assert_allclose(full, to_numpy(model(images)), atol=1e-5)

    # Coarse to fine: k levels decode the sum of the first k codes of each level.
    codebooks = [to_numpy(q.codebook) for q in model.quantizer.level_quantizers]
    codes = to_numpy(indices)
    for k in range(1, DEPTH + 1):
        summed = sum(codebooks[level][codes[..., level]] for level in range(k))
        np.testing.assert_allclose(
            to_numpy(model.decode_indices(codes[..., :k])),
            to_numpy(model.decode(summed.astype("float32"))),
            atol=1e-5,
        )


@pytest.mark.slow
def test_image_error_never_grows_with_depth_after_training_with_quantize_dropout():
    # Quantize dropout trains the decoder on every prefix of the levels; the
    # ordering needs a few hundred steps to settle on these blobs.
    images = blob_images(512)
    model = small_rqvae(quantize_dropout=True, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(images, epochs=8, batch_size=32, verbose=0)
    fixed = images[:64]
    codes = model.encode_indices(fixed)
    target = fixed.astype("float32") / 255.0
    errors = [
        float(np.mean((to_numpy(model.decode_indices(codes[..., :k])) - target) ** 2))
        for k in range(1, DEPTH + 1)
    ]
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:])), errors


def test_bad_indices_get_clear_errors():
    model = small_rqvae()
    model.build((None, 16, 16, 1))
    with pytest.raises(ValueError, match=r"1 <= k <= depth=3.*\(2, 4, 4, 4\)"):
        model.decode_indices(np.zeros((2, 4, 4, 4), "int32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\).*\(2, 4, 4\)"):
        model.decode_indices(np.zeros((2, 4, 4), "int32"))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[16, 16\]"):
        model.decode_indices(np.full((2, 4, 4, 2), 16))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[-1, 0\]"):
        model.decode_indices(np.array([[[[0, -1]]]]))
    with pytest.raises(TypeError, match=r"integer indices.*float32"):
        model.decode_indices(np.zeros((2, 4, 4, 3), "float32"))


def test_mismatched_parts_are_rejected_at_construction():
    rq = ResidualVectorQuantizer(VectorQuantizer(16, 4), depth=2)
    with pytest.raises(ValueError, match=r"latent_dim \(8\).*embedding_dim \(4\)"):
        RQVAE(ConvEncoder(8), ConvDecoder(1), rq)
    with pytest.raises(TypeError, match="ResidualVectorQuantizer.*Received: VectorQuantizer"):
        RQVAE(ConvEncoder(4), ConvDecoder(1), VectorQuantizer(16, 4))
    with pytest.raises(TypeError, match="`decoder`.*output_channels"):
        RQVAE(ConvEncoder(4), keras.layers.Dense(4), rq)
