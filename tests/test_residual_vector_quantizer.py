import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import EMAVectorQuantizer, VectorQuantizer
from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer


def numpy_residual_quantize(x, codebooks):
    """Greedy residual quantization written out: indices (..., d) and the sum of codes."""
    flat = x.reshape(-1, x.shape[-1]).astype("float64")
    residual, total, indices = flat.copy(), np.zeros_like(flat), []
    for codebook in codebooks:
        level = ((residual[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
        residual -= codebook[level]
        total += codebook[level]
        indices.append(level)
    return np.stack(indices, -1).reshape(x.shape[:-1] + (len(codebooks),)), total.reshape(x.shape)


def built_rq(depth=3, shared=False, num_embeddings=32, dim=4, seed=0, zero_code=False, **kwargs):
    """A gradient-codebook RQ with NumPy codebooks of decreasing scale, one per level."""
    layer = ResidualVectorQuantizer(
        VectorQuantizer(num_embeddings, dim, commitment_cost=0.3),
        depth,
        shared_codebook=shared,
        **kwargs,
    )
    layer.build((None, dim))
    rng = np.random.default_rng(seed)
    codebooks = []
    for level, quantizer in enumerate(layer.quantizers):
        codebook = (rng.normal(size=(num_embeddings, dim)) * 0.5**level).astype("float32")
        if zero_code:
            # With a zero code, no level can move a vector away from its input.
            codebook[0] = 0.0
        quantizer.embeddings.assign(codebook)
        codebooks.append(codebook)
    return layer, [codebooks[0]] * depth if shared else codebooks


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 5, 4)])
def test_indices_quantized_and_losses_match_numpy(shared, shape):
    layer, codebooks = built_rq(shared=shared)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    out = layer(x)

    indices, total = numpy_residual_quantize(x, codebooks)
    np.testing.assert_array_equal(to_numpy(out["indices"]), indices)
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    assert tuple(out["indices"].shape) == shape[:-1] + (3,)
    np.testing.assert_allclose(to_numpy(out["quantized"]), total, atol=1e-5)

    # Level l's loss is the error of the partial sum of codes 0..l; summed over l.
    axes = tuple(range(1, len(shape)))
    partial = np.zeros_like(x, dtype="float64")
    expected = np.zeros(shape[0])
    for level, codebook in enumerate(codebooks):
        partial += codebook[indices[..., level]]
        expected += ((x - partial) ** 2).mean(axis=axes)
    np.testing.assert_allclose(to_numpy(out["codebook_loss"]), expected, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(out["commitment_loss"]), 0.3 * expected, rtol=1e-4)
    np.testing.assert_array_equal(to_numpy(layer.inputs_to_indices(x)), indices)


def test_latent_error_never_grows_with_depth():
    layer, _ = built_rq(depth=5, zero_code=True)
    x = np.random.default_rng(2).normal(size=(64, 4)).astype("float32")
    indices = layer.inputs_to_indices(x)
    errors = [
        float(np.mean((to_numpy(layer.indices_to_codes(indices, depth=k)) - x) ** 2))
        for k in range(1, 6)
    ]
    assert all(later <= earlier + 1e-7 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_trained_ema_codebooks_refine_level_by_level():
    layer = ResidualVectorQuantizer(
        EMAVectorQuantizer(16, 2, decay=0.8, init_from_first_batch=True, seed=5), depth=3
    )
    rng = np.random.default_rng(3)
    data = rng.normal(size=(512, 2)).astype("float32")
    for _ in range(30):
        layer(data[rng.permutation(512)[:256]], training=True)
    indices = layer.inputs_to_indices(data)
    errors = [
        float(np.mean((to_numpy(layer.indices_to_codes(indices, k)) - data) ** 2))
        for k in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05


def test_partial_lookup_is_the_sum_of_the_first_levels():
    layer, codebooks = built_rq(depth=4)
    indices = np.random.default_rng(4).integers(0, 32, size=(2, 3, 3, 4)).astype("int32")
    for k in range(1, 5):
        expected = sum(codebooks[level][indices[..., level]] for level in range(k))
        np.testing.assert_allclose(
            to_numpy(layer.indices_to_codes(indices, depth=k)), expected, atol=1e-6
        )
        # A prefix of the indices means the same.
        np.testing.assert_allclose(
            to_numpy(layer.indices_to_codes(indices[..., :k])), expected, atol=1e-6
        )


def test_straight_through_to_the_input_and_codebook_gradients_per_level():
    layer, _ = built_rq(depth=2)
    x = np.random.default_rng(5).normal(size=(5, 4)).astype("float32")
    weights = np.random.default_rng(6).normal(size=(5, 4)).astype("float32")
    grad_x, *grad_codebooks = gradients(
        layer, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    np.testing.assert_allclose(grad_x, weights, atol=1e-6)
    assert all(g is None or not np.any(g) for g in grad_codebooks)

    grad_x, *grad_codebooks = gradients(layer, x, lambda out: keras.ops.sum(out["codebook_loss"]))
    assert not np.any(grad_x)
    assert len(grad_codebooks) == 2 and all(np.any(g) for g in grad_codebooks)


@pytest.mark.parametrize("shared", [False, True])
def test_shared_or_per_level_codebooks(shared):
    layer = ResidualVectorQuantizer(
        EMAVectorQuantizer(8, 3, seed=1), depth=4, shared_codebook=shared
    )
    layer.build((None, 3))
    levels = layer.level_quantizers
    assert len(levels) == 4
    assert len(layer.quantizers) == (1 if shared else 4)
    assert len({id(q) for q in levels}) == (1 if shared else 4)
    assert len(layer.weights) == 4 * len(layer.quantizers)  # 4 EMA variables each
    if not shared:
        assert [q.seed for q in levels] == [1, 2, 3, 4]
        first, second = to_numpy(levels[0].codebook), to_numpy(levels[1].codebook)
        assert not np.allclose(first, second)


def test_ema_codebooks_change_only_in_training():
    layer = ResidualVectorQuantizer(EMAVectorQuantizer(8, 3, decay=0.5), depth=2)
    x = np.random.default_rng(7).normal(size=(16, 3)).astype("float32")
    layer(x)
    before = [to_numpy(q.codebook) for q in layer.level_quantizers]
    layer(x, training=False)
    layer.inputs_to_indices(x)
    for old, quantizer in zip(before, layer.level_quantizers):
        np.testing.assert_array_equal(to_numpy(quantizer.codebook), old)
    layer(x, training=True)
    for old, quantizer in zip(before, layer.level_quantizers):
        assert not np.allclose(to_numpy(quantizer.codebook), old)


def test_quantize_dropout_uses_a_random_prefix_of_the_levels_in_training_only():
    layer, codebooks = built_rq(depth=3, quantize_dropout=True, seed=11)
    x = np.random.default_rng(8).normal(size=(6, 4)).astype("float32")
    full = layer(x)
    indices = to_numpy(full["indices"])
    prefixes = [sum(codebooks[level][indices[..., level]] for level in range(k)) for k in (1, 2, 3)]
    np.testing.assert_allclose(to_numpy(full["quantized"]), prefixes[2], atol=1e-5)
    used = set()
    for _ in range(30):
        out = layer(x, training=True)
        np.testing.assert_array_equal(to_numpy(out["indices"]), indices)
        quantized = to_numpy(out["quantized"])
        matches = [k + 1 for k, p in enumerate(prefixes) if np.allclose(quantized, p, atol=1e-5)]
        assert len(matches) == 1
        used.add(matches[0])
        # The losses count only the levels in use.
        partial_errors = [((x - p) ** 2).mean(axis=1) for p in prefixes[: matches[0]]]
        np.testing.assert_allclose(to_numpy(out["codebook_loss"]), sum(partial_errors), rtol=1e-4)
    assert used == {1, 2, 3}


def test_config_round_trip_and_mixed_precision_output():
    layer = ResidualVectorQuantizer(
        VectorQuantizer(16, 4, commitment_cost=0.5),
        depth=3,
        shared_codebook=True,
        quantize_dropout=True,
        seed=7,
    )
    config = layer.get_config()
    assert {"quantizer", "depth", "shared_codebook", "quantize_dropout", "seed"} <= set(config)
    clone = ResidualVectorQuantizer.from_config(config)
    assert clone.get_config() == config
    assert clone.level_quantizers[0].commitment_cost == 0.5

    x = np.random.default_rng(9).normal(size=(4, 2, 2, 4)).astype("float32")
    layer.build(x.shape)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x)["indices"]), to_numpy(layer(x)["indices"]))

    mixed = ResidualVectorQuantizer(VectorQuantizer(16, 4), depth=2, dtype="mixed_bfloat16")
    out = mixed(x)
    assert keras.backend.standardize_dtype(out["quantized"].dtype) == "bfloat16"
    assert all(q.compute_dtype == "float32" for q in mixed.quantizers)


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match=r"depth.*positive integer.*depth=0"):
        ResidualVectorQuantizer(VectorQuantizer(8, 4), depth=0)
    with pytest.raises(ValueError, match=r"depth=2\.5"):
        ResidualVectorQuantizer(VectorQuantizer(8, 4), depth=2.5)
    with pytest.raises(
        TypeError, match=r"vqkeras.layers.Quantizer with one index per position.*Dense"
    ):
        ResidualVectorQuantizer(keras.layers.Dense(4), depth=2)

    layer = ResidualVectorQuantizer(VectorQuantizer(8, 4), depth=2)
    with pytest.raises(ValueError, match="no codebooks yet"):
        layer.indices_to_codes(np.zeros((2, 2), "int32"))
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\).*\(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match=r"float inputs.*int32"):
        layer(np.zeros((2, 4), "int32"))

    layer.build((None, 4))
    with pytest.raises(ValueError, match=r"1 <= k <= depth=2.*\(5, 3\)"):
        layer.indices_to_codes(np.zeros((5, 3), "int32"))
    with pytest.raises(ValueError, match=r"at most.*\(1\).*depth=2"):
        layer.indices_to_codes(np.zeros((5, 1), "int32"), depth=2)
    with pytest.raises(ValueError, match=r"indices in \[0, 8\).*\[0, 8\]"):
        layer.indices_to_codes(np.array([[0, 8]]))
    with pytest.raises(TypeError, match=r"integer indices.*float32"):
        layer.indices_to_codes(np.zeros((5, 2), "float32"))


def test_a_config_saved_with_beta_loads_with_a_warning():
    layer = ResidualVectorQuantizer(VectorQuantizer(16, 4, commitment_cost=0.5), depth=2)
    config = layer.get_config()
    old = dict(config, quantizer=dict(config["quantizer"]))
    old["quantizer"]["config"] = dict(config["quantizer"]["config"])
    old["quantizer"]["config"]["beta"] = old["quantizer"]["config"].pop("commitment_cost")
    with pytest.warns(DeprecationWarning, match="use `commitment_cost`"):
        clone = ResidualVectorQuantizer.from_config(old)
    assert clone.get_config() == config
    assert [q.commitment_cost for q in clone.level_quantizers] == [0.5, 0.5]
