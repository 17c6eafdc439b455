import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import VectorQuantizer


def numpy_nearest(flat, codebook):
    distances = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def built_quantizer(num_embeddings=32, dim=4, commitment_cost=0.25, seed=0, **kwargs):
    layer = VectorQuantizer(num_embeddings, dim, commitment_cost=commitment_cost, **kwargs)
    layer.build((None, dim))
    codebook = np.random.default_rng(seed).normal(size=(num_embeddings, dim)).astype("float32")
    layer.embeddings.assign(codebook)
    return layer, codebook


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4), (2, 3, 5, 4)])
def test_nearest_code_and_losses_match_numpy(shape):
    layer, codebook = built_quantizer(commitment_cost=0.3)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    out = layer(x)

    expected = numpy_nearest(x.reshape(-1, 4), codebook).reshape(shape[:-1])
    np.testing.assert_array_equal(to_numpy(out["indices"]), expected)
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    quantized = codebook[expected]
    np.testing.assert_allclose(to_numpy(out["quantized"]), quantized, rtol=1e-6, atol=1e-6)

    axes = tuple(range(1, len(shape)))
    squared = ((x - quantized) ** 2).mean(axis=axes)
    np.testing.assert_allclose(to_numpy(out["codebook_loss"]), squared, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(out["commitment_loss"]), 0.3 * squared, rtol=1e-5)
    assert out["codebook_loss"].shape == (shape[0],)


def test_lookup_of_indices_gives_quantized():
    layer, _ = built_quantizer()
    x = np.random.default_rng(2).normal(size=(4, 3, 3, 4)).astype("float32")
    out = layer(x)
    np.testing.assert_allclose(
        to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(layer.nearest_indices(x)), to_numpy(out["indices"]))


def test_straight_through_gradients():
    layer, _ = built_quantizer()
    x = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    weights = np.random.default_rng(4).normal(size=(5, 4)).astype("float32")

    # Through the quantized output only: identity to the input, nothing to
    # the codebook.
    grad_x, grad_codebook = gradients(
        layer, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    np.testing.assert_allclose(grad_x, weights, rtol=1e-6)
    assert grad_codebook is None or not np.any(grad_codebook)

    # Through the codebook loss: the codebook moves towards the inputs.
    grad_x, grad_codebook = gradients(layer, x, lambda out: keras.ops.sum(out["codebook_loss"]))
    assert grad_x is None or not np.any(grad_x)
    assert np.any(grad_codebook)
    indices = to_numpy(layer.nearest_indices(x))
    expected = np.zeros_like(grad_codebook)
    codebook = layer.embeddings.numpy()
    np.add.at(expected, indices, 2.0 * (codebook[indices] - x) / 4)
    np.testing.assert_allclose(grad_codebook, expected, rtol=1e-5, atol=1e-6)

    # Through the commitment loss: the input moves, the codebook does not.
    grad_x, grad_codebook = gradients(layer, x, lambda out: keras.ops.sum(out["commitment_loss"]))
    np.testing.assert_allclose(grad_x, 0.25 * 2.0 * (x - codebook[indices]) / 4, rtol=1e-5)
    assert grad_codebook is None or not np.any(grad_codebook)


def test_mixed_bfloat16_assigns_the_same_codes_as_float32():
    # Codes 1e-3 apart near 1.0: bfloat16 (spacing 2**-7 there) cannot tell
    # them apart, so the search must run in float32.
    rng = np.random.default_rng(5)
    codebook = (1.0 + 1e-3 * np.arange(16)[:, None] * np.ones((1, 4))).astype("float32")
    x = (1.0 + 1e-3 * rng.uniform(0, 15, size=(64, 1)) * np.ones((1, 4))).astype("float32")
    reference = VectorQuantizer(16, 4)
    reference.build((None, 4))
    reference.embeddings.assign(codebook)
    mixed = VectorQuantizer(16, 4, dtype="mixed_bfloat16")
    mixed.build((None, 4))
    mixed.embeddings.assign(codebook)

    expected = to_numpy(reference(x)["indices"])
    assert len(np.unique(expected)) > 10
    np.testing.assert_array_equal(to_numpy(mixed(x)["indices"]), expected)
    assert keras.backend.standardize_dtype(mixed(x)["quantized"].dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.embeddings.dtype) == "float32"


def test_config_round_trip():
    layer = VectorQuantizer(64, 8, commitment_cost=0.5, name="vq")
    clone = VectorQuantizer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.num_embeddings, clone.embedding_dim, clone.commitment_cost) == (64, 8, 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_embeddings": 0, "embedding_dim": 4}, "num_embeddings=0"),
        ({"num_embeddings": 8, "embedding_dim": 2.5}, "embedding_dim=2.5"),
        ({"num_embeddings": 8, "embedding_dim": 4, "commitment_cost": -1}, "commitment_cost=-1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


def test_bad_inputs():
    layer, _ = built_quantizer()
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\).*shape=\(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="float inputs.*int32"):
        layer(np.zeros((2, 4), "int32"))
    with pytest.raises(ValueError, match=r"indices in \[0, 32\).*\[0, 32\]"):
        layer.indices_to_codes(np.array([0, 32]))
    with pytest.raises(TypeError, match="integer indices.*float32"):
        layer.indices_to_codes(np.array([0.0, 1.0], "float32"))
