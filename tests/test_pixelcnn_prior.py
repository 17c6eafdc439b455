import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import gradients, to_numpy

from vqkeras.models.pixelcnn_prior import PixelCNNPrior

K = 8


def tiny_prior(num_classes=None, grid_shape=(4, 4), **kwargs):
    arguments = {"filters": 8, "num_blocks": 3, "kernel_size": 3, "embedding_dim": 4}
    arguments.update(kwargs)
    return PixelCNNPrior(K, grid_shape, num_classes=num_classes, **arguments)


def stripe_grids(n, seed=0, shape=(4, 4)):
    """Learnable grids: code (c + column) mod K, with c drawn per grid; labels c mod 3."""
    offsets = np.random.default_rng(seed).integers(0, K, size=n)
    grids = (offsets[:, None, None] + np.arange(shape[1])[None, None, :]) % K
    grids = np.broadcast_to(grids, (n, *shape)).astype("int32")
    return np.ascontiguousarray(grids), (offsets % 3).astype("int32")


def numpy_cross_entropy(logits, codes):
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, codes[..., None], axis=-1)[..., 0]


class EmbeddedStack(keras.layers.Layer):
    """The prior's causal stack on float embeddings, for gradients."""

    def __init__(self, prior, labels):
        super().__init__()
        self.prior = prior
        self.labels = labels

    def call(self, embedded, training=None):
        return self.prior.logits_from_embeddings(embedded, self.labels)


def test_logits_are_exactly_causal_without_blind_spot():
    height, width = 4, 5
    positions = height * width
    prior = tiny_prior(num_classes=3, grid_shape=(height, width), num_blocks=4)
    prior.build()
    stack = EmbeddedStack(prior, np.full((positions,), 2, dtype="int32"))
    x = np.random.default_rng(0).normal(size=(1, height, width, 4)).astype("float32")
    x = np.repeat(x, positions, axis=0)
    stack(x)
    # Copy p of the input selects the logits at position p, so one gradient
    # gives the dependence of every position (the copies are independent).
    # Outside the causal past every term of a gradient is a zero upstream
    # gradient or a masked-out weight: an exact 0.0 on any machine.
    select = np.eye(positions, dtype="float32").reshape(positions, height, width, 1)
    grad = gradients(stack, x, lambda y: keras.ops.sum(keras.ops.multiply(y, select)))[0]
    seen = np.abs(grad).sum(axis=-1).reshape(positions, positions) > 0
    # Four blocks of kernel 3 reach the whole 4x5 grid: every earlier position.
    np.testing.assert_array_equal(seen, np.tri(positions, k=-1, dtype=bool))


def test_call_gives_logits_and_labels_change_them():
    prior = tiny_prior(num_classes=3)
    grids, _ = stripe_grids(2)
    logits = prior((grids, np.array([0, 0], dtype="int32")))
    assert tuple(logits.shape) == (2, 4, 4, K)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    for block in prior.blocks:
        table = np.random.default_rng(1).normal(size=(3, 16)).astype("float32")
        block.class_embedding.set_weights([table])
    same = to_numpy(prior((grids, np.array([0, 0], dtype="int32"))))
    other = to_numpy(prior((grids, np.array([0, 2], dtype="int32"))))
    np.testing.assert_allclose(same[0], other[0], atol=1e-6)
    assert np.abs(same[1] - other[1]).max() > 1e-3


def test_fit_lowers_nll_and_logs_every_metric():
    grids, labels = stripe_grids(256)
    prior = tiny_prior(num_classes=3, image_size=(16, 16, 1))
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = prior.evaluate(grids, labels, batch_size=128, verbose=0, return_dict=True)
    history = prior.fit(
        grids,
        labels,
        epochs=4,
        batch_size=32,
        validation_data=(grids[:64], labels[:64]),
        verbose=0,
    )
    after = prior.evaluate(grids, labels, batch_size=128, verbose=0, return_dict=True)
    names = ["loss", "nll", "bits_per_dim"]
    assert sorted(history.history) == sorted(names + [f"val_{name}" for name in names])
    assert before["nll"] > 0.8 * math.log(K)
    assert after["nll"] < 0.5 * before["nll"]
    # One 4x4 grid stands for a 16x16x1 image.
    np.testing.assert_allclose(
        after["bits_per_dim"], after["nll"] * 16 / (math.log(2) * 256), rtol=1e-4
    )
    np.testing.assert_allclose(after["loss"], after["nll"], rtol=1e-6)


def test_unconditional_prior_fits_a_dataset_and_logs_no_bits_per_dim():
    grids, labels = stripe_grids(64)
    prior = tiny_prior()
    prior.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices((grids, labels)).batch(16)
    history = prior.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert sorted(history.history) == ["loss", "nll"]
    assert np.isfinite(history.history["nll"][0])


def test_logged_nll_is_the_cross_entropy_of_the_logits():
    grids, labels = stripe_grids(32, seed=3)
    grids = (grids + np.arange(32)[:, None, None]) % K  # some variety across grids
    prior = tiny_prior(num_classes=3, image_size=(8, 8, 3))
    prior.compile(optimizer="adam")
    logged = prior.evaluate(grids, labels, batch_size=32, verbose=0, return_dict=True)
    logits = prior.predict([grids, labels], batch_size=32, verbose=0)
    cross_entropy = numpy_cross_entropy(logits.astype("float64"), grids)
    np.testing.assert_allclose(logged["nll"], cross_entropy.mean(), rtol=1e-5)
    per_grid_bits = cross_entropy.sum(axis=(1, 2)) / math.log(2)
    np.testing.assert_allclose(logged["bits_per_dim"], per_grid_bits.mean() / 192, rtol=1e-5)


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


def test_top_1_sampling_is_greedy_decoding():
    prior = tiny_prior()
    prior.build()
    # Random output biases: with the zero initial biases, the first position
    # (no context) has all-equal logits, a tie that top_k=1 keeps whole.
    kernel, _ = prior.head_logits.get_weights()
    prior.head_logits.set_weights([kernel, np.random.default_rng(0).normal(size=K)])
    grids = to_numpy(prior.sample(4, top_k=1, seed=0))
    np.testing.assert_array_equal(grids, to_numpy(prior.sample(4, top_k=1, seed=1)))
    # The logits at a position depend only on the codes before it, which are
    # final: each code is the argmax of its logits given the sampled grid.
    np.testing.assert_array_equal(np.argmax(to_numpy(prior(grids)), axis=-1), grids)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, 3)])
def test_sample_frequencies_follow_the_tempered_top_k_distribution(temperature, top_k):
    # A 1x1 grid: the only code has no context, its distribution is fixed.
    prior = tiny_prior(grid_shape=(1, 1))
    prior.build()
    prior.head_logits.set_weights(
        [np.zeros((1, 1, 8, K), "float32"), np.linspace(-1.0, 1.5, K).astype("float32")]
    )
    logits = to_numpy(prior(np.zeros((1, 1, 1), dtype="int32")))[0, 0, 0] / temperature
    if top_k is not None:
        logits = np.where(logits < np.sort(logits)[-top_k], -np.inf, logits)
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    codes = to_numpy(prior.sample(4000, temperature=temperature, top_k=top_k, seed=5)).ravel()
    frequencies = np.bincount(codes, minlength=K) / codes.size
    np.testing.assert_allclose(frequencies, expected, atol=0.03)
    assert np.all(frequencies[expected == 0] == 0)


def test_save_and_load_give_identical_logits(tmp_path):
    grids, labels = stripe_grids(8)
    prior = tiny_prior(num_classes=3, image_size=(16, 16, 1), name="prior")
    prior.compile(optimizer="adam")
    prior.fit(grids, labels, epochs=1, batch_size=8, verbose=0)
    expected = to_numpy(prior((grids, labels)))
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    # Building a deserialized (already built) prior again is harmless.
    from_config = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(prior))
    from_config.build((None, 4, 4))
    from_config.set_weights(prior.get_weights())
    np.testing.assert_allclose(to_numpy(from_config((grids, labels))), expected, atol=1e-6)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, PixelCNNPrior)
    assert restored.get_config() == prior.get_config()
    np.testing.assert_allclose(to_numpy(restored((grids, labels))), expected, atol=1e-6)
    np.testing.assert_array_equal(
        to_numpy(restored.sample(3, labels=labels[:3], seed=2)),
        to_numpy(prior.sample(3, labels=labels[:3], seed=2)),
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
    with pytest.raises(ValueError, match=r"Received shape=\(4, 4\)\. One grid\? .*grids\[None\]"):
        prior((grids[0], labels[:1]))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)\. Received values in \[0, 3\]"):
        prior.fit(grids, np.array([0, 1, 2, 3]), verbose=0)
    with pytest.raises(ValueError, match="class-conditional.*labels.*required"):
        prior.fit(grids, verbose=0)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
        prior((grids, labels[:2]))
    with pytest.raises(ValueError, match="unconditional.*not accepted"):
        tiny_prior()((grids, labels))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num": 0}, "num=0"),
        ({"num": 2.0}, "num=2.0"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"top_k": 0}, r"top_k=0"),
        ({"top_k": K + 1}, r"\[1, 8\]. Received: top_k=9"),
        ({"seed": -1}, "seed=-1"),
        ({"labels": None}, r"labels.*of shape \(2,\) are required"),
        ({"labels": np.array([0, 1, 2])}, r"shape \(2,\).*Received shape=\(3,\)"),
        ({"labels": np.array([0, 3])}, r"labels in \[0, 3\)"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs, match):
    arguments = {"num": 2, "labels": np.array([0, 1])}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tiny_prior(num_classes=3).sample(**arguments)


def test_float_sampling_labels_raise():
    with pytest.raises(TypeError, match="integer labels.*float64"):
        tiny_prior(num_classes=3).sample(2, labels=np.array([0.0, 1.0]))


def test_unconditional_prior_rejects_sampling_labels():
    with pytest.raises(ValueError, match="unconditional"):
        tiny_prior().sample(2, labels=np.array([0, 1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_embeddings": 0}, "num_embeddings=0"),
        ({"grid_shape": (4,)}, "grid_shape"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"image_size": (28, 28)}, "image_size"),
        ({"kernel_size": 4}, "kernel_size=4"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    arguments = {"num_embeddings": K, "grid_shape": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        PixelCNNPrior(**arguments)


# -- stacked codes (RQ-VAE) and a condition grid (VQ-VAE-2) -------------------

DEPTH = 2
TOP_K = 5


def depth_prior(**kwargs):
    return tiny_prior(grid_shape=(2, 3), depth=DEPTH, **kwargs)


def grid_conditioned_prior(**kwargs):
    return tiny_prior(condition_num_embeddings=TOP_K, condition_grid_shape=(2, 2), **kwargs)


def random_codes(shape, high, seed):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype("int32")


def code_dependence(prior, codes, inputs=lambda codes: codes):
    """`seen[i, j]`: changing code i (raster order, levels innermost) changes the logits of code j."""
    n = codes.size
    unchanged = np.repeat(codes.reshape(1, -1), n, axis=0)
    perturbed = unchanged.copy()
    perturbed[np.arange(n), np.arange(n)] += 1
    perturbed %= K
    unchanged_logits, perturbed_logits = (
        to_numpy(prior(inputs(batch.reshape(n, *codes.shape)))).reshape(n, n, K)
        for batch in (unchanged, perturbed)
    )
    # Row i (code i changed) against row i of a batch of unchanged copies: the
    # same kernels at the same batch position and batch size, so only the
    # change can move the logits. Rows at different positions are not
    # comparable: kernels may round them differently (identical rows differ
    # by 3.7e-9 on an AVX2 CPU). A code outside the causal past meets only
    # exact zeros (masked weights, padding) or is never read (the shifted
    # cumulative sum), so it leaves the logits bit for bit unchanged.
    return np.abs(perturbed_logits - unchanged_logits).max(axis=-1) > 0


def test_depth_prior_predicts_each_code_from_all_codes_before_it():
    keras.utils.set_random_seed(0)
    prior = depth_prior(num_blocks=2)
    codes = random_codes((2, 3, DEPTH), K, seed=0)
    assert to_numpy(prior(codes[None])).shape == (1, 2, 3, DEPTH, K)
    # Codes come in raster order with the levels of a position innermost:
    # the logits of code j depend on exactly the codes before j.
    seen = code_dependence(prior, codes)
    np.testing.assert_array_equal(seen, np.tri(codes.size, k=-1, dtype=bool).T)


def test_depth_head_sums_the_levels_before_a_level_exactly():
    # On a 1x1 grid the stacks see no code: the depth head alone. Positive
    # level embeddings 10x larger per level make (a + b) - b round away from
    # a, so an exclusive sum by subtraction would leak code l into the logits
    # of level l; the shifted cumulative sum never reads it.
    prior = tiny_prior(grid_shape=(1, 1), depth=4)
    prior.build()
    scales = np.repeat(10.0 ** np.arange(4), K)[:, None]
    table = np.random.default_rng(11).uniform(1, 2, size=(4 * K, 8)) * scales
    prior.depth_code_embedding.set_weights([table.astype("float32")])
    seen = code_dependence(prior, random_codes((1, 1, 4), K, seed=12))
    np.testing.assert_array_equal(seen, np.tri(4, k=-1, dtype=bool).T)


def test_grid_conditioned_prior_is_causal_in_its_codes_and_sees_the_whole_condition():
    keras.utils.set_random_seed(0)
    prior = grid_conditioned_prior(num_blocks=4)
    codes = random_codes((4, 4), K, seed=1)
    condition = random_codes((1, 2, 2), TOP_K, seed=2)
    seen = code_dependence(
        prior, codes, lambda batch: (batch, np.repeat(condition, len(batch), axis=0))
    )
    np.testing.assert_array_equal(seen, np.tri(codes.size, k=-1, dtype=bool).T)
    # Changing the last condition code changes the logits of the first position.
    changed = condition.copy()
    changed[0, 1, 1] = (changed[0, 1, 1] + 1) % TOP_K
    first = to_numpy(prior((codes[None], condition)))[0, 0, 0]
    assert np.abs(to_numpy(prior((codes[None], changed)))[0, 0, 0] - first).max() > 1e-6


@pytest.mark.parametrize("kind", ["depth", "condition"])
def test_greedy_samples_are_the_argmax_of_their_own_logits(kind):
    prior = depth_prior() if kind == "depth" else grid_conditioned_prior(num_classes=3)
    prior.build()
    kernel, _ = prior.head_logits.get_weights()
    prior.head_logits.set_weights([kernel, np.random.default_rng(0).normal(size=K)])
    arguments = {}
    if kind == "condition":
        arguments = {"labels": np.array([0, 2, 1]), "condition": random_codes((3, 2, 2), TOP_K, 3)}
    codes = to_numpy(prior.sample(3, top_k=1, seed=0, **arguments))
    assert codes.shape == (3, *prior.code_shape) and codes.dtype == np.int32
    inputs = codes if kind == "depth" else (codes, arguments["condition"], arguments["labels"])
    np.testing.assert_array_equal(np.argmax(to_numpy(prior(inputs)), axis=-1), codes)


@pytest.mark.parametrize("kind", ["plain", "class", "depth", "condition"])
def test_row_and_position_steps_give_the_forward_pass_logits(kind):
    # Sampling and prior coding run the prior as `vertical_row_step` per row,
    # `horizontal_position_step` per position and `position_logits` per
    # code, each reading what the steps before left in buffers. Fed known
    # codes, they must give the logits of one forward pass, to float
    # rounding (products of other shapes than the convolutions).
    prior = {
        "plain": lambda: tiny_prior(grid_shape=(3, 4), kernel_size=5),
        "class": lambda: tiny_prior(num_classes=3, grid_shape=(3, 4)),
        "depth": depth_prior,
        "condition": lambda: grid_conditioned_prior(num_classes=3),
    }[kind]()
    prior.build()
    rng = np.random.default_rng(5)
    for weight in prior.weights:  # biases too, which are built as zeros
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    codes = random_codes((3, *prior.code_shape), K, seed=6)
    labels = np.array([2, 0, 1], dtype="int32") if kind in ("class", "condition") else None
    condition = random_codes((3, 2, 2), TOP_K, seed=7) if kind == "condition" else None
    inputs = codes if labels is None else (codes, labels)
    if condition is not None:
        inputs = (codes, condition, labels)
    expected = to_numpy(prior(inputs)).reshape(3, *prior.grid_shape, prior.levels, K)
    features = None if condition is None else prior.condition_features(condition)
    weights = prior.position_weights()
    buffers = prior.initial_step_state(3)
    for row in range(prior.grid_shape[0]):
        terms, buffers = prior.vertical_row_step(codes, buffers, row, labels, features)
        row_buffers = prior.initial_row_buffers(3)
        for column in range(prior.grid_shape[1]):
            position, row_buffers = prior.horizontal_position_step(
                codes[:, row], row_buffers, terms, column, weights
            )
            here = codes[:, row, column] if kind == "depth" else None
            np.testing.assert_allclose(
                to_numpy(prior.position_logits(position, weights, here)),
                expected[:, row, column],
                atol=1e-5,
            )


def test_depth_samples_are_valid_and_seeds_reproduce_them():
    prior = depth_prior()
    first = to_numpy(prior.sample(5, seed=3))
    assert first.shape == (5, 2, 3, DEPTH) and first.min() >= 0 and first.max() < K
    np.testing.assert_array_equal(first, to_numpy(prior.sample(5, seed=3)))
    assert (first != to_numpy(prior.sample(5, seed=4))).any()


def test_depth_and_grid_conditioned_priors_learn_and_log_nats_per_code():
    # Level 1 repeats level 0, and the bottom grid is the top one repeated:
    # those codes are predictable, so their NLL must fall far below log K.
    keras.utils.set_random_seed(1)
    top = random_codes((64, 2, 2), TOP_K, seed=4)
    bottom = np.repeat(np.repeat(top, 2, axis=1), 2, axis=2)
    depth_codes = np.stack([random_codes((128, 2, 3), K, seed=5)] * DEPTH, axis=-1)
    for prior, x in ((grid_conditioned_prior(), (bottom, top)), (depth_prior(), depth_codes)):
        prior.compile(optimizer=keras.optimizers.Adam(0.02))
        history = prior.fit(x, epochs=25, batch_size=32, verbose=0).history
        assert history["nll"][0] > 0.8 * math.log(K)
        nll = numpy_cross_entropy(to_numpy(prior(x)), x[0] if isinstance(x, tuple) else x)
        assert abs(history["nll"][-1] - nll.mean()) < 0.1  # the last epoch's running mean
        if prior.depth is None:
            assert nll.mean() < 0.25 * math.log(K)
        else:  # level 0 is random, level 1 a copy of it
            assert nll[..., 1].mean() < 0.4 * math.log(K) < nll[..., 0].mean()


def test_depth_and_grid_conditioned_priors_round_trip(tmp_path):
    codes = random_codes((3, 4, 4), K, seed=6)
    condition = random_codes((3, 2, 2), TOP_K, seed=7)
    for prior, inputs in (
        (grid_conditioned_prior(num_classes=3), (codes, condition, np.array([0, 1, 2]))),
        (depth_prior(), random_codes((3, 2, 3, DEPTH), K, seed=8)),
    ):
        expected = to_numpy(prior(inputs))
        path = str(tmp_path / f"{prior.name}.keras")
        prior.save(path)
        restored = keras.saving.load_model(path, compile=False)
        assert restored.get_config() == prior.get_config()
        np.testing.assert_allclose(to_numpy(restored(inputs)), expected, atol=1e-6)


def test_grid_conditioned_prior_checks_its_condition():
    prior = grid_conditioned_prior()
    codes = random_codes((2, 4, 4), K, seed=9)
    condition = random_codes((2, 2, 2), TOP_K, seed=10)
    with pytest.raises(ValueError, match=r"expected inputs \(grids, condition_grids\)"):
        prior(codes)
    with pytest.raises(ValueError, match=r"condition codes in \[0, 5\)"):
        prior((codes, condition + TOP_K))
    with pytest.raises(ValueError, match=r"condition codes of shape \(2, 2, 2\).*\(2, 4, 4\)"):
        prior((codes, codes))
    with pytest.raises(ValueError, match=r"condition codes of shape \(batch, 2, 2\) are required"):
        prior.sample(2)
    with pytest.raises(ValueError, match=r"shape \(3, 2, 2\).*Received shape=\(2, 2, 2\)"):
        prior.sample(3, condition=condition)
    with pytest.raises(TypeError, match="integer condition codes"):
        prior.sample(2, condition=condition.astype("float32"))
    with pytest.raises(ValueError, match="no condition grid.*not accepted"):
        tiny_prior().sample(2, condition=condition)
    with pytest.raises(ValueError, match=r"shape \(batch, 2, 3, 2\)\. Received shape=\(2, 2, 3\)"):
        depth_prior()(codes[:, :2, :3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 0}, "depth=0"),
        ({"condition_num_embeddings": 4}, "set together"),
        ({"condition_grid_shape": (2, 2)}, "set together"),
        ({"condition_num_embeddings": 4, "condition_grid_shape": (3, 3)}, r"dividing.*\(3, 3\)"),
    ],
)
def test_bad_depth_and_condition_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PixelCNNPrior(K, (4, 4), **kwargs)
