import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.codes import CodeGrid
from vqkeras.models.transformer_prior import TransformerPrior

K = 8


def tiny_prior(num_classes=None, grid_shape=(4, 4), **kwargs):
    arguments = {"embed_dim": 16, "num_heads": 2, "num_layers": 2, "mlp_ratio": 2}
    arguments.update(kwargs)
    return TransformerPrior(K, grid_shape, num_classes=num_classes, **arguments)


def stripe_grids(n, seed=0, shape=(4, 4)):
    """Learnable grids: code (c + column) mod K, with c drawn per grid; labels c mod 3."""
    offsets = np.random.default_rng(seed).integers(0, K, size=n)
    grids = (offsets[:, None, None] + np.arange(shape[1])[None, None, :]) % K
    grids = np.broadcast_to(grids, (n, *shape)).astype("int32")
    return np.ascontiguousarray(grids), (offsets % 3).astype("int32")


def randomize_head_bias(prior):
    # Random output biases: with the zero initial biases, logits can tie, and
    # ties make greedy decoding ambiguous.
    prior.build()
    kernel, _ = prior.head.get_weights()
    prior.head.set_weights([kernel, np.random.default_rng(0).normal(size=K).astype("float32")])


def test_logits_are_exactly_causal():
    height, width = 3, 4
    length = height * width
    prior = tiny_prior(num_classes=3, grid_shape=(height, width))
    grid = np.random.default_rng(0).integers(0, K, size=(height, width)).astype("int32")
    base = np.repeat(grid[None], length, axis=0)
    labels = np.full((length,), 1, dtype="int32")
    # Copy i has code i changed; it is compared with the unperturbed copy at
    # the same batch position of a batch of the same size, so the arithmetic
    # is the same and positions <= i must match exactly.
    perturbed = base.reshape(length, length).copy()
    perturbed[np.arange(length), np.arange(length)] += 1
    perturbed = (perturbed % K).reshape(length, height, width)
    before = to_numpy(prior((base, labels))).reshape(length, length, K)
    after = to_numpy(prior((perturbed, labels))).reshape(length, length, K)
    changed = np.abs(after - before).max(axis=-1)
    for i in range(length):
        assert np.all(changed[i, : i + 1] == 0), i
        assert np.all(changed[i, i + 1 :] > 1e-6), i


def test_call_gives_float32_logits_and_labels_change_them():
    prior = tiny_prior(num_classes=3)
    grids, _ = stripe_grids(2)
    logits = prior((grids, np.array([0, 0], dtype="int32")))
    assert tuple(logits.shape) == (2, 4, 4, K)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    same = to_numpy(prior((grids, np.array([0, 0], dtype="int32"))))
    other = to_numpy(prior((grids, np.array([0, 2], dtype="int32"))))
    np.testing.assert_array_equal(same[0], other[0])
    assert np.abs(same[1] - other[1]).max() > 1e-3


def test_cached_steps_give_the_logits_of_the_full_forward_pass():
    prior = tiny_prior(num_classes=3)
    grids = np.random.default_rng(1).integers(0, K, size=(3, 4, 4)).astype("int32")
    labels = np.array([0, 2, 1], dtype="int32")
    full = to_numpy(prior((grids, labels))).reshape(3, 16, K)
    flat = grids.reshape(3, 16)
    cache = prior.initial_cache(3)
    for position in range(16):
        previous = flat[:, max(position - 1, 0)]
        logits, cache = prior.next_logits(previous, position, labels, cache)
        # Float results through different matmul shapes: equal up to rounding.
        np.testing.assert_allclose(to_numpy(logits), full[:, position], atol=1e-4, rtol=1e-4)


def test_fit_lowers_nll_and_logs_nats_per_code():
    grids, labels = stripe_grids(256)
    prior = tiny_prior(num_classes=3, image_size=(16, 16, 1))
    prior.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = prior.evaluate(grids, labels, batch_size=128, verbose=0, return_dict=True)
    history = prior.fit(grids, labels, epochs=6, batch_size=32, verbose=0)
    after = prior.evaluate(grids, labels, batch_size=128, verbose=0, return_dict=True)
    assert sorted(history.history) == ["bits_per_dim", "loss", "nll"]
    assert before["nll"] > 0.8 * math.log(K)
    assert after["nll"] < 0.5 * before["nll"]
    # One 4x4 grid stands for a 16x16x1 image.
    np.testing.assert_allclose(
        after["bits_per_dim"], after["nll"] * 16 / (math.log(2) * 256), rtol=1e-4
    )


def test_logged_nll_is_the_cross_entropy_of_the_logits():
    grids, _ = stripe_grids(32, seed=3)
    grids = (grids + np.arange(32)[:, None, None]) % K
    prior = tiny_prior()
    prior.compile(optimizer="adam")
    logged = prior.evaluate(grids, batch_size=32, verbose=0, return_dict=True)
    logits = to_numpy(prior(grids)).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    cross_entropy = -np.take_along_axis(log_probs, grids[..., None], axis=-1)
    np.testing.assert_allclose(logged["nll"], cross_entropy.mean(), rtol=1e-5)


def test_samples_are_valid_codes_and_seeds_reproduce_them():
    prior = tiny_prior(num_classes=3)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype="int32")
    first = to_numpy(prior.sample(6, labels=labels, seed=7))
    again = to_numpy(prior.sample(6, labels=labels, seed=7))
    other = to_numpy(prior.sample(6, labels=labels, seed=8))
    assert first.shape == (6, 4, 4) and first.dtype == np.int32
    assert first.min() >= 0 and first.max() < K
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


@pytest.mark.parametrize("use_cache", [True, False])
def test_top_1_sampling_is_greedy_decoding(use_cache):
    prior = tiny_prior(num_classes=3)
    randomize_head_bias(prior)
    labels = np.array([0, 1, 2, 1], dtype="int32")
    grids = to_numpy(prior.sample(4, labels=labels, top_k=1, seed=0, use_cache=use_cache))
    other_seed = prior.sample(4, labels=labels, top_k=1, seed=1, use_cache=use_cache)
    np.testing.assert_array_equal(grids, to_numpy(other_seed))
    # The logits at a position depend only on the codes before it, which are
    # final: each code is the argmax of its logits given the sampled grid.
    np.testing.assert_array_equal(np.argmax(to_numpy(prior((grids, labels))), axis=-1), grids)


def test_cached_and_recomputing_samplers_agree():
    prior = tiny_prior()
    randomize_head_bias(prior)
    cached = to_numpy(prior.sample(4, temperature=0.5, seed=3))
    recomputed = to_numpy(prior.sample(4, temperature=0.5, seed=3, use_cache=False))
    # Equal up to a draw landing within float rounding of a CDF step.
    assert (cached == recomputed).mean() > 0.9


def test_guidance_scale_one_is_conditional_and_zero_unconditional():
    prior = tiny_prior(num_classes=3)
    randomize_head_bias(prior)
    labels = np.array([0, 1, 2, 2, 1], dtype="int32")
    conditional = to_numpy(prior.sample(5, labels=labels, seed=4))
    unconditional = to_numpy(prior.sample(5, seed=4))
    guided_1 = to_numpy(prior.sample(5, labels=labels, guidance_scale=1.0, seed=4))
    guided_0 = to_numpy(prior.sample(5, labels=labels, guidance_scale=0, seed=4))
    np.testing.assert_array_equal(guided_1, conditional)
    np.testing.assert_array_equal(guided_0, unconditional)
    assert (conditional != unconditional).any()
    guided_3 = to_numpy(prior.sample(5, labels=labels, guidance_scale=3.0, seed=4))
    assert guided_3.min() >= 0 and guided_3.max() < K


def test_label_dropout_trains_the_null_class():
    grids, labels = stripe_grids(64)
    prior = tiny_prior(num_classes=3, label_dropout=0.5)
    prior.build()
    null_before = to_numpy(prior.start_embedding.embeddings)[3].copy()
    prior.compile(optimizer="adam")
    prior.fit(grids, labels, epochs=1, batch_size=32, verbose=0)
    assert np.abs(to_numpy(prior.start_embedding.embeddings)[3] - null_before).max() > 0
    never = tiny_prior(num_classes=3, label_dropout=0.0)
    never.build()
    null_before = to_numpy(never.start_embedding.embeddings)[3].copy()
    never.compile(optimizer="sgd")
    never.fit(grids, labels, epochs=1, batch_size=32, verbose=0)
    np.testing.assert_array_equal(to_numpy(never.start_embedding.embeddings)[3], null_before)


# A 1x1 grid attends over one position: Keras warns about the size-1 softmax.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_top_p_keeps_the_smallest_nucleus(top_p):
    # A 1x1 grid: the only code has no context, its distribution is fixed.
    prior = tiny_prior(grid_shape=(1, 1))
    prior.build()
    kernel, _ = prior.head.get_weights()
    bias = np.linspace(-1.0, 1.5, K).astype("float32")
    prior.head.set_weights([np.zeros_like(kernel), bias])
    probabilities = np.exp(bias - bias.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)
    before = np.cumsum(probabilities[order]) - probabilities[order]
    kept = order[before < top_p]
    expected = np.zeros(K)
    expected[kept] = probabilities[kept] / probabilities[kept].sum()
    codes = to_numpy(prior.sample(4000, top_p=top_p, seed=5)).ravel()
    frequencies = np.bincount(codes, minlength=K) / codes.size
    np.testing.assert_allclose(frequencies, expected, atol=0.03)
    assert np.all(frequencies[expected == 0] == 0)


def test_save_and_load_give_identical_logits_and_samples(tmp_path):
    grids, labels = stripe_grids(8)
    prior = tiny_prior(num_classes=3, image_size=(16, 16, 1), name="prior")
    prior.compile(optimizer="adam")
    prior.fit(grids, labels, epochs=1, batch_size=8, verbose=0)
    expected = to_numpy(prior((grids, labels)))
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, TransformerPrior)
    assert restored.get_config() == prior.get_config()
    np.testing.assert_allclose(to_numpy(restored((grids, labels))), expected, atol=1e-6)
    prior.save_to_preset(str(tmp_path / "preset"))
    from_preset = TransformerPrior.from_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(to_numpy(from_preset((grids, labels))), expected, atol=1e-6)
    np.testing.assert_array_equal(
        to_numpy(from_preset.sample(3, labels=labels[:3], guidance_scale=2.0, seed=2)),
        to_numpy(prior.sample(3, labels=labels[:3], guidance_scale=2.0, seed=2)),
    )


def test_for_grid_and_fits():
    grid = CodeGrid("indices", (4, 4), K)
    prior = TransformerPrior.for_grid(grid, num_classes=3, embed_dim=16, num_heads=2)
    assert prior.fits(grid) and prior.conditional and prior.code_shape == (4, 4)
    assert not prior.fits(CodeGrid("indices", (4, 5), K))
    assert not prior.fits(CodeGrid("indices", (4, 4), K + 1))
    # Stacked codes (an RQ-VAE's) and a grid given another (a VQ-VAE-2's bottom).
    stacked = CodeGrid("indices", (4, 4, 2), K)
    prior = TransformerPrior.for_grid(stacked, embed_dim=16, num_heads=2)
    assert prior.code_shape == (4, 4, 2) and prior.fits(stacked) and not prior.fits(grid)
    top, bottom = CodeGrid("top", (2, 2), 5), CodeGrid("bottom", (4, 4), K, conditioned_on="top")
    prior = TransformerPrior.for_grid(bottom, condition=top, embed_dim=16, num_heads=2)
    assert prior.fits(bottom, top) and not prior.fits(bottom) and prior.conditioned_on_grid
    assert prior.sequence_length == 1 + 4 + 16 - 1


# Stacked codes (depth 2) given a 2x2 condition grid of 5 codes.
STACKED = {"depth": 2, "condition_num_embeddings": 5, "condition_grid_shape": (2, 2)}


def stacked_inputs(batch, grid_shape=(4, 4), condition_shape=(2, 2), seed=0):
    """Random stacked code grids, condition grids and labels."""
    rng = np.random.default_rng(seed)
    grids = rng.integers(0, K, size=(batch, *grid_shape, 2)).astype("int32")
    condition = rng.integers(0, 5, size=(batch, *condition_shape)).astype("int32")
    return grids, condition, (np.arange(batch) % 3).astype("int32")


def test_stacked_codes_given_a_condition_grid_are_exactly_causal():
    prior = tiny_prior(
        num_classes=3, grid_shape=(3, 4), **{**STACKED, "condition_grid_shape": (1, 2)}
    )
    length = 3 * 4 * 2
    grids, condition, labels = stacked_inputs(1, (3, 4), (1, 2))
    base = np.repeat(grids, length, axis=0)
    condition = np.repeat(condition, length, axis=0)
    labels = np.repeat(labels, length)
    # Copy i has code i changed (levels innermost in the flattened order).
    perturbed = base.reshape(length, length).copy()
    perturbed[np.arange(length), np.arange(length)] += 1
    perturbed = (perturbed % K).reshape(base.shape)
    before = to_numpy(prior((base, condition, labels))).reshape(length, length, K)
    after = to_numpy(prior((perturbed, condition, labels))).reshape(length, length, K)
    changed = np.abs(after - before).max(axis=-1)
    for i in range(length):
        assert np.all(changed[i, : i + 1] == 0), i
        assert np.all(changed[i, i + 1 :] > 1e-6), i
    # Every code sees every condition code.
    other = condition.copy()
    other[:, 0, 1] = (other[:, 0, 1] + 1) % 5
    moved = to_numpy(prior((base, other, labels))).reshape(length, length, K)
    assert np.all(np.abs(moved - before).max(axis=-1) > 1e-6)


def test_cached_steps_give_the_full_forward_logits_with_depth_and_condition():
    prior = tiny_prior(num_classes=3, grid_shape=(4, 4), **STACKED)
    grids, condition, labels = stacked_inputs(3, seed=1)
    full = to_numpy(prior((grids, condition, labels))).reshape(3, 32, K)
    flat, given = grids.reshape(3, 32), condition.reshape(3, 4)
    cache = prior.initial_cache(3)
    for position in range(prior.sequence_length):
        code = position - prior.prefix_length
        previous = flat[:, max(code - 1, 0)]
        logits, cache = prior.next_logits(previous, position, labels, cache, given)
        if code >= 0:
            np.testing.assert_allclose(to_numpy(logits), full[:, code], atol=1e-4, rtol=1e-4)


def test_stacked_conditioned_prior_trains_samples_and_reloads(tmp_path):
    prior = tiny_prior(num_classes=3, grid_shape=(4, 4), image_size=(16, 16, 1), **STACKED)
    randomize_head_bias(prior)
    grids, condition, labels = stacked_inputs(8, seed=3)
    prior.compile(optimizer="adam")
    logs = prior.fit((grids, condition), labels, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(logs["nll"][0]) and "bits_per_dim" in logs
    with pytest.raises(ValueError, match=r"condition codes of shape \(batch, 2, 2\)"):
        prior.sample(2, labels=labels[:2])
    greedy = to_numpy(prior.sample(3, labels=labels[:3], condition=condition[:3], top_k=1))
    recomputed = prior.sample(
        3, labels=labels[:3], condition=condition[:3], top_k=1, use_cache=False
    )
    assert greedy.shape == (3, 4, 4, 2) and greedy.max() < K
    np.testing.assert_array_equal(greedy, to_numpy(recomputed))
    # Greedy codes are the argmax of their logits given the sampled grid.
    logits = to_numpy(prior((greedy, condition[:3], labels[:3])))
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), greedy)
    prior.save_to_preset(str(tmp_path / "preset"))
    restored = TransformerPrior.from_preset(str(tmp_path / "preset"))
    assert restored.get_config() == prior.get_config()
    np.testing.assert_allclose(
        to_numpy(restored((grids, condition, labels))),
        to_numpy(prior((grids, condition, labels))),
        atol=1e-6,
    )


def test_bad_inputs_raise_clear_errors():
    prior = tiny_prior(num_classes=3)
    grids, labels = stripe_grids(4)
    prior.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"code indices in \[0, 8\)\. Received values in \[0, 8\]"):
        prior.predict([np.where(grids == 2, 8, grids), labels], verbose=0)
    with pytest.raises(TypeError, match="integer code indices.*float32"):
        prior((grids.astype("float32"), labels))
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4\)\. Received shape=\(4, 16\)"):
        prior((grids.reshape(4, 16), labels))
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4\)\. Received shape=\(4, 5, 4\)"):
        prior((np.zeros((4, 5, 4), dtype="int32"), labels))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)\. Received values in \[0, 3\]"):
        prior.fit(grids, np.array([0, 1, 2, 3]), verbose=0)
    with pytest.raises(ValueError, match="class-conditional.*labels.*required"):
        prior.fit(grids, verbose=0)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
        prior((grids, labels[:2]))
    with pytest.raises(ValueError, match="a sequence of 3 inputs"):
        prior((grids, labels, labels))
    with pytest.raises(ValueError, match="unconditional.*not accepted"):
        tiny_prior()((grids, labels))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num": 0}, "num=0"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"top_k": 0}, r"top_k=0"),
        ({"top_k": K + 1}, r"\[1, 8\]. Received: top_k=9"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"guidance_scale": -1.0}, "guidance_scale=-1.0"),
        ({"guidance_scale": 2.0, "labels": None}, "guidance needs `labels`"),
        ({"seed": -1}, "seed=-1"),
        ({"labels": np.array([0, 1, 2])}, r"shape \(2,\).*Received shape=\(3,\)"),
        ({"labels": np.array([0, 3])}, r"labels in \[0, 3\)"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs, match):
    arguments = {"num": 2, "labels": np.array([0, 1])}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tiny_prior(num_classes=3).sample(**arguments)


def test_unconditional_prior_rejects_sampling_labels():
    with pytest.raises(ValueError, match="unconditional"):
        tiny_prior().sample(2, labels=np.array([0, 1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_embeddings": 0}, "num_embeddings=0"),
        ({"grid_shape": (4,)}, "grid_shape"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"embed_dim": 10, "num_heads": 4}, "embed_dim=10"),
        ({"num_layers": 0}, "num_layers=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"label_dropout": -0.1}, "label_dropout=-0.1"),
        ({"image_size": (28, 28)}, "image_size"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    arguments = {"num_embeddings": K, "grid_shape": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        TransformerPrior(**arguments)
