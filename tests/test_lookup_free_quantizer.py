import json

import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import LookupFreeQuantizer


def corners(bits):
    """The 2^bits codes in {-1, 1}^bits, code j's channel i = bit i of j."""
    return np.array([[1.0 if j >> i & 1 else -1.0 for i in range(bits)] for j in range(2**bits)])


def numpy_entropy(p):
    return -(p * np.log(np.maximum(p, 1e-30))).sum(-1)


def numpy_soft_assignments(z, temperature):
    """softmax(-||z - c||^2 / temperature) over every corner c, `(..., 2^bits)`."""
    distances = ((z[..., None, :] - corners(z.shape[-1])) ** 2).sum(-1)
    logits = -distances / temperature
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def numpy_entropy_loss(z, temperature=1.0, entropy_weight=0.1, diversity_weight=1.0):
    """MAGVIT-v2's entropy loss, exactly over all codes, per sample."""
    p = numpy_soft_assignments(z.astype("float64"), temperature)
    per_sample = numpy_entropy(p).reshape(len(z), -1).mean(1)
    batch = numpy_entropy(p.reshape(-1, p.shape[-1]).mean(0))
    return entropy_weight * (per_sample - diversity_weight * batch)


def inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("shape", [(6, 3), (3, 5, 3), (2, 3, 5, 3)])
def test_signs_indices_and_losses_match_numpy(shape):
    layer = LookupFreeQuantizer(
        bits=3, entropy_weight=0.2, commitment_weight=0.3, diversity_weight=0.7, temperature=0.5
    )
    z = inputs(shape)
    out = layer(z, training=True)
    signs = np.where(z > 0, 1.0, -1.0)
    np.testing.assert_array_equal(to_numpy(out["quantized"]), signs)
    np.testing.assert_array_equal(to_numpy(out["indices"]), ((z > 0) * [1, 2, 4]).sum(-1))
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    axes = tuple(range(1, len(shape)))
    np.testing.assert_allclose(
        to_numpy(out["commitment_loss"]), 0.3 * ((z - signs) ** 2).mean(axis=axes), rtol=1e-5
    )
    expected = numpy_entropy_loss(z, temperature=0.5, entropy_weight=0.2, diversity_weight=0.7)
    np.testing.assert_allclose(to_numpy(out["entropy_loss"]), expected, rtol=1e-5, atol=1e-6)
    assert out["entropy_loss"].shape == (shape[0],) and layer.num_embeddings == 8


def test_index_bits_are_the_channels_least_significant_first():
    layer = LookupFreeQuantizer(bits=3)
    z = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [2, 0, 3], [-1, -1, -1]], "float32")
    np.testing.assert_array_equal(to_numpy(layer(z)["indices"]), [1, 2, 4, 5, 0])
    np.testing.assert_array_equal(to_numpy(layer.indices_to_codes(np.arange(8))), corners(3))
    # Zero is not positive: it quantizes to -1.
    np.testing.assert_array_equal(to_numpy(layer(z)["quantized"])[3], [1, -1, 1])


def test_lookup_of_indices_gives_quantized_and_inputs_to_indices_agrees():
    for layer, width in [(LookupFreeQuantizer(bits=5), 5), (LookupFreeQuantizer(4, 7), 7)]:
        z = inputs((4, 3, 3, width), seed=1)
        out = layer(z)
        np.testing.assert_allclose(
            to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=1e-6
        )
        np.testing.assert_array_equal(
            to_numpy(layer.inputs_to_indices(z)), to_numpy(out["indices"])
        )


def test_projections_map_the_inputs_to_the_bits_and_the_signs_back():
    layer = LookupFreeQuantizer(bits=3, embedding_dim=6)
    x = inputs((5, 2, 6), seed=2)
    out = layer(x)
    assert layer.projected and tuple(out["quantized"].shape) == (5, 2, 6)
    kernel_in, bias_in = (to_numpy(w) for w in layer.project_in.weights)
    kernel_out, bias_out = (to_numpy(w) for w in layer.project_out.weights)
    z = x @ kernel_in + bias_in
    np.testing.assert_array_equal(to_numpy(out["indices"]), ((z > 0) * [1, 2, 4]).sum(-1))
    signs = np.where(z > 0, 1.0, -1.0)
    np.testing.assert_allclose(to_numpy(out["quantized"]), signs @ kernel_out + bias_out, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(out["entropy_loss"]), numpy_entropy_loss(z), rtol=1e-4, atol=1e-6
    )


def test_straight_through_gradient():
    layer = LookupFreeQuantizer(bits=4)
    layer.build((None, 4))
    z = inputs((5, 4), seed=3)
    weights = inputs((5, 4), seed=4)
    (grad_z,) = gradients(
        layer, z, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    np.testing.assert_allclose(grad_z, weights, rtol=1e-6)
    # The commitment loss pulls z towards its signs.
    (grad_z,) = gradients(layer, z, lambda out: keras.ops.sum(out["commitment_loss"]))
    signs = np.where(z > 0, 1.0, -1.0)
    np.testing.assert_allclose(grad_z, 0.25 * 2 * (z - signs) / 4, rtol=1e-5)


def test_one_group_is_the_exact_entropy_and_groups_factorise_it():
    z = inputs((4, 6, 6), seed=5)
    exact = LookupFreeQuantizer(bits=6)
    one_group = LookupFreeQuantizer(bits=6, group_bits=6)
    pairs = LookupFreeQuantizer(bits=6, group_bits=2)
    uneven = LookupFreeQuantizer(bits=6, group_bits=4)  # groups of 4 and 2 bits
    expected = numpy_entropy_loss(z)
    for layer in (exact, one_group):
        np.testing.assert_allclose(to_numpy(layer(z)["entropy_loss"]), expected, rtol=1e-5)

    # The soft assignment is a product over the channels, so the
    # per-position entropy is the same for any grouping; the batch entropy
    # becomes the sum of the groups' marginal entropies.
    p_exact = numpy_soft_assignments(z.astype("float64"), 1.0)
    per_sample = numpy_entropy(p_exact).mean(1)
    for layer, groups in [(pairs, [(0, 2), (2, 4), (4, 6)]), (uneven, [(0, 4), (4, 6)])]:
        sample_entropy, batch_entropy = layer.entropy_terms(keras.ops.convert_to_tensor(z))
        np.testing.assert_allclose(to_numpy(sample_entropy), per_sample, rtol=1e-5)
        marginals = [
            numpy_soft_assignments(z[..., a:b].astype("float64"), 1.0).reshape(-1, 2 ** (b - a))
            for a, b in groups
        ]
        np.testing.assert_allclose(
            to_numpy(batch_entropy), sum(numpy_entropy(m.mean(0)) for m in marginals), rtol=1e-5
        )
        # An upper bound of the exact batch entropy (subadditivity).
        exact_batch = numpy_entropy(p_exact.reshape(-1, 64).mean(0))
        assert to_numpy(batch_entropy) >= exact_batch - 1e-5


@pytest.mark.parametrize("bits, group_bits", [(5, None), (5, 1), (7, 4)])
def test_entropy_loss_gradient_matches_finite_differences(bits, group_bits):
    # The layer never forms the (positions, 2^bits) assignments; its
    # gradient must still be that of the loss over every code.
    layer = LookupFreeQuantizer(bits=bits, group_bits=group_bits, temperature=0.7)
    layer.build((None, bits))
    z = inputs((3, 4, bits), seed=7)
    (grad_z,) = gradients(layer, z, lambda out: keras.ops.sum(out["entropy_loss"]))

    groups = [(a, min(a + (group_bits or bits), bits)) for a in range(0, bits, group_bits or bits)]

    def loss(z):
        total = numpy_entropy_loss(z, temperature=0.7).sum()
        if group_bits is None:
            return total
        # Grouped: the batch term is the sum of the groups' marginal entropies.
        p = numpy_soft_assignments(z, 0.7).reshape(-1, 2**bits)
        total += 0.1 * len(z) * numpy_entropy(p.mean(0))
        for a, b in groups:
            marginal = numpy_soft_assignments(z[..., a:b], 0.7).reshape(-1, 2 ** (b - a))
            total -= 0.1 * len(z) * numpy_entropy(marginal.mean(0))
        return total

    z64, step = z.astype("float64"), 1e-4
    expected = np.zeros_like(z64)
    for index in np.ndindex(z.shape):
        shift = np.zeros_like(z64)
        shift[index] = step
        expected[index] = (loss(z64 + shift) - loss(z64 - shift)) / (2 * step)
    np.testing.assert_allclose(grad_z, expected, rtol=1e-3, atol=1e-5)


def test_groups_that_are_independent_over_the_batch_give_the_exact_entropy():
    # Every combination of two values of bits 0-1 with two of bits 2-3: the
    # batch-mean distribution is the product of the groups' marginals.
    first = np.array([[0.3, -1.2], [-0.7, 0.4]])
    second = np.array([[1.5, 0.2], [-0.1, -0.9]])
    z = np.array([[np.concatenate([a, b]) for a in first for b in second]], "float32")
    exact = to_numpy(LookupFreeQuantizer(bits=4)(z)["entropy_loss"])
    factorised = to_numpy(LookupFreeQuantizer(bits=4, group_bits=2)(z)["entropy_loss"])
    np.testing.assert_allclose(factorised, exact, rtol=1e-5)
    np.testing.assert_allclose(exact, numpy_entropy_loss(z), rtol=1e-5)


def test_large_codebooks_factorise_by_default():
    assert LookupFreeQuantizer(bits=12)._groups == [(0, 12)]
    assert LookupFreeQuantizer(bits=13)._groups == [(0, 7), (7, 6)]
    layer = LookupFreeQuantizer(bits=18)
    assert layer._groups == [(0, 9), (9, 9)] and layer.num_embeddings == 2**18
    z = inputs((2, 3, 18), seed=6)
    out = layer(z)
    np.testing.assert_array_equal(to_numpy(out["indices"]), ((z > 0) * 2 ** np.arange(18)).sum(-1))
    sample_entropy, _ = layer.entropy_terms(keras.ops.convert_to_tensor(z))
    # Exact per position: the sum of the per-channel binary entropies.
    p_bit = 1 / (1 + np.exp(-4.0 * z.astype("float64")))
    binary = -(p_bit * np.log(p_bit) + (1 - p_bit) * np.log(1 - p_bit))
    np.testing.assert_allclose(to_numpy(sample_entropy), binary.sum(-1).mean(1), rtol=1e-5)
    assert LookupFreeQuantizer(bits=30).num_embeddings == 2**30


def test_mixed_bfloat16_decides_and_computes_losses_in_float32():
    z = inputs((16, 4), seed=7)
    reference = LookupFreeQuantizer(bits=4)(z)
    out = LookupFreeQuantizer(bits=4, dtype="mixed_bfloat16")(z)
    np.testing.assert_array_equal(to_numpy(out["indices"]), to_numpy(reference["indices"]))
    assert keras.backend.standardize_dtype(out["quantized"].dtype) == "bfloat16"
    for name in ("entropy_loss", "commitment_loss"):
        assert keras.backend.standardize_dtype(out[name].dtype) == "float32"
        np.testing.assert_allclose(to_numpy(out[name]), to_numpy(reference[name]), rtol=1e-6)
    projected = LookupFreeQuantizer(bits=4, embedding_dim=6, dtype="mixed_bfloat16")
    projected.build((None, 6))
    assert {keras.backend.standardize_dtype(w.dtype) for w in projected.weights} == {"float32"}
    assert projected.project_in.compute_dtype == "float32"


def test_config_round_trip():
    layer = LookupFreeQuantizer(
        14, embedding_dim=16, entropy_weight=0.2, diversity_weight=0.5, group_bits=7, name="lfq"
    )
    config = layer.get_config()
    clone = LookupFreeQuantizer.from_config(config)
    assert clone.get_config() == config
    assert (clone.bits, clone.group_bits, clone.temperature) == (14, 7, 1.0)
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert restored.get_config() == config
    assert LookupFreeQuantizer(5).get_config()["group_bits"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 0}, r"`bits` must be an integer in \[1, 30\]. Received: bits=0"),
        ({"bits": 31}, "bits=31"),
        ({"bits": 4.0}, "bits=4.0"),
        ({"bits": 4, "group_bits": 5}, r"`group_bits` must be an integer in \[1, 4\]"),
        ({"bits": 20, "group_bits": 17}, r"in \[1, 16\]. Received: group_bits=17"),
        ({"bits": 4, "group_bits": 0}, "group_bits=0"),
        ({"bits": 4, "temperature": 0}, r"`temperature` must be in \(0.0, inf\)"),
        ({"bits": 4, "entropy_weight": -1}, "entropy_weight=-1"),
        ({"bits": 4, "commitment_weight": -0.1}, "commitment_weight=-0.1"),
        ({"bits": 4, "diversity_weight": float("nan")}, "diversity_weight=nan"),
        ({"bits": 4, "embedding_dim": 0}, "embedding_dim=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LookupFreeQuantizer(**kwargs)


def test_bad_inputs():
    layer = LookupFreeQuantizer(bits=4)
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\).*shape=\(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="float inputs.*int32"):
        layer(np.zeros((2, 4), "int32"))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[-1, 3\]"):
        layer.indices_to_codes(np.array([-1, 3]))
    with pytest.raises(ValueError, match="no projections yet"):
        LookupFreeQuantizer(4, embedding_dim=3).indices_to_codes(np.array([0]))
