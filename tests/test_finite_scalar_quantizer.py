import json

import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import FiniteScalarQuantizer

LEVELS = (8, 5, 2, 3)  # even and odd, and the smallest level count


def numpy_fsq(z, levels):
    """The paper's appendix A in NumPy: bounded values, codes in [-1, 1],
    mixed-radix indices and the derivative of the codes (straight through
    the rounding)."""
    levels = np.asarray(levels, dtype="float64")
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.tan(offset / half_l)
    bounded = np.tanh(z + shift) * half_l - offset
    half_width = levels // 2
    rounded = np.round(bounded)
    basis = np.cumprod([1, *levels[:-1]])
    indices = ((rounded + half_width) * basis).sum(-1).astype("int32")
    derivative = half_l * (1 - np.tanh(z + shift) ** 2) / half_width
    return rounded / half_width, indices, derivative


def inputs(shape, seed=0, scale=2.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4), (2, 3, 5, 4)])
def test_codes_and_indices_match_numpy(shape):
    layer = FiniteScalarQuantizer(LEVELS)
    x = inputs(shape)
    out = layer(x, training=True)
    codes, indices, _ = numpy_fsq(x, LEVELS)
    np.testing.assert_allclose(to_numpy(out["quantized"]), codes, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(out["indices"]), indices)
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    assert set(out) == {"quantized", "indices"} and layer.loss_names == ()
    assert layer.num_embeddings == 8 * 5 * 2 * 3 and layer.embedding_dim == 4


def test_every_index_decodes_to_a_distinct_grid_point_that_quantizes_back():
    layer = FiniteScalarQuantizer(LEVELS)
    everything = np.arange(layer.num_embeddings, dtype="int32")
    codes = to_numpy(layer.indices_to_codes(everything))
    assert codes.shape == (240, 4) and len({tuple(row) for row in codes}) == 240
    # Each channel takes its L values, (level - L // 2) / (L // 2).
    for channel, size in enumerate(LEVELS):
        half = size // 2
        expected = (np.arange(size) - half) / half
        np.testing.assert_allclose(np.unique(codes[:, channel]), expected)
    # Channel 0 is the least significant digit.
    np.testing.assert_allclose(codes[:2], [[-1, -1, -1, -1], [-0.75, -1, -1, -1]])
    # Latents whose bounded values are the levels moved 10% towards the
    # range's centre, -offset, give those indices. (tanh never reaches the
    # range's ends; for L = 2 the range is (-1, 0), both levels at its ends.)
    levels = np.asarray(LEVELS, dtype="float64")
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.tan(offset / half_l)
    centred = codes * (levels // 2) + offset
    latents = np.arctanh(0.9 * centred / half_l) - shift
    indices = to_numpy(layer(latents.astype("float32"))["indices"])
    np.testing.assert_array_equal(indices, everything)


def test_lookup_of_indices_gives_quantized():
    layer = FiniteScalarQuantizer(LEVELS)
    out = layer(inputs((4, 3, 3, 4), seed=1))
    np.testing.assert_allclose(
        to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=0
    )


def test_gradient_is_the_bound_derivative_straight_through_the_rounding():
    layer = FiniteScalarQuantizer(LEVELS)
    layer.build((None, 4))
    x = inputs((5, 4), seed=2, scale=1.0)
    weights = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    (grad_x,) = gradients(
        layer, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    _, _, derivative = numpy_fsq(x, LEVELS)
    np.testing.assert_allclose(grad_x, weights * derivative, rtol=1e-5, atol=1e-7)


def test_projections_map_the_inputs_to_the_levels_and_the_codes_back():
    layer = FiniteScalarQuantizer((4, 4), embedding_dim=6)
    x = inputs((3, 2, 6), seed=4)
    out = layer(x)
    assert layer.projected and layer.num_embeddings == 16
    kernel_in, bias_in = (to_numpy(w) for w in layer.project_in.weights)
    kernel_out, bias_out = (to_numpy(w) for w in layer.project_out.weights)
    codes, indices, _ = numpy_fsq(x @ kernel_in + bias_in, (4, 4))
    np.testing.assert_array_equal(to_numpy(out["indices"]), indices)
    np.testing.assert_allclose(to_numpy(out["quantized"]), codes @ kernel_out + bias_out, atol=1e-5)
    assert tuple(out["quantized"].shape) == (3, 2, 6)
    np.testing.assert_allclose(
        to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=1e-6
    )
    # Gradients reach both projections through the rounding.
    grads = gradients(layer, x, lambda out: keras.ops.sum(keras.ops.square(out["quantized"])))
    assert len(grads) == 5 and all(np.any(g) for g in grads)


def to_bfloat16(x):
    """`x` rounded to bfloat16's 8-bit mantissa (kept as float32)."""
    bits = np.asarray(x, "float32").view("uint32")
    return ((bits + 0x8000) & 0xFFFF0000).view("float32")


def test_mixed_bfloat16_rounds_in_float32():
    # Latents whose bounded values lie 1e-3 either side of a rounding
    # boundary (k + 0.5): bfloat16 inputs would move many across it.
    levels = np.array([8.0, 8.0])
    half_l = 7 * (1 - 1e-3) / 2
    rng = np.random.default_rng(5)
    boundaries = rng.integers(-4, 3, size=(256, 2)) + 0.5
    bounded = boundaries + rng.choice([-1e-3, 1e-3], size=(256, 2))
    x = (np.arctanh((bounded + 0.5) / half_l) - np.tan(0.5 / half_l)).astype("float32")
    _, expected, _ = numpy_fsq(x, levels)
    _, in_bfloat16, _ = numpy_fsq(to_bfloat16(x), levels)
    assert np.mean(in_bfloat16 != expected) > 0.2

    mixed = FiniteScalarQuantizer((8, 8), dtype="mixed_bfloat16")
    out = mixed(x)
    np.testing.assert_array_equal(to_numpy(out["indices"]), expected)
    assert keras.backend.standardize_dtype(out["quantized"].dtype) == "bfloat16"
    # With projections: float32 weights, and a float32 projection in.
    projected = FiniteScalarQuantizer((8, 8), embedding_dim=6, dtype="mixed_bfloat16")
    projected.build((None, 6))
    assert {keras.backend.standardize_dtype(w.dtype) for w in projected.weights} == {"float32"}
    assert projected.project_in.compute_dtype == "float32"


def test_config_round_trip():
    layer = FiniteScalarQuantizer((7, 5, 5), embedding_dim=8, name="fsq")
    config = layer.get_config()
    assert config["levels"] == (7, 5, 5) and config["embedding_dim"] == 8
    clone = FiniteScalarQuantizer.from_config(config)
    assert clone.get_config() == config
    # Through JSON, as in a .keras file: the levels come back as a list.
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert type(restored) is FiniteScalarQuantizer and restored.get_config() == config
    assert FiniteScalarQuantizer().get_config()["embedding_dim"] == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"levels": (8, 1)}, r"Every level must be an integer >= 2. Received: levels=\(8, 1\)"),
        ({"levels": (8, 2.5)}, r"integer >= 2. Received: levels=\(8, 2.5\)"),
        ({"levels": (True, 5)}, r"integer >= 2. Received: levels=\(True, 5\)"),
        ({"levels": ()}, r"at least one channel's levels. Received: levels=\(\)"),
        ({"levels": 5}, "sequence of integers >= 2. Received: levels=5"),
        ({"levels": (2**16, 2**16)}, r"4294967296 codes.*at most 2147483647"),
        ({"levels": (8, 5), "embedding_dim": 0}, "embedding_dim=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FiniteScalarQuantizer(**kwargs)


def test_bad_inputs():
    layer = FiniteScalarQuantizer(LEVELS)
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\).*shape=\(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="float inputs.*int32"):
        layer(np.zeros((2, 4), "int32"))
    with pytest.raises(ValueError, match=r"indices in \[0, 240\).*\[0, 240\]"):
        layer.indices_to_codes(np.array([0, 240]))
    with pytest.raises(TypeError, match="integer indices.*float32"):
        layer.indices_to_codes(np.array([0.0, 1.0], "float32"))
    with pytest.raises(ValueError, match="no projections yet"):
        FiniteScalarQuantizer((4, 4), embedding_dim=3).indices_to_codes(np.array([0]))
