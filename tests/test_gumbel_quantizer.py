import json

import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import GumbelQuantizer


def built(num_embeddings=6, dim=4, identity_codebook=False, seed=0, **kwargs):
    """A built quantizer with NumPy-drawn logit weights and codebook. With
    `identity_codebook` (K = D), the quantized vector is the sample itself."""
    layer = GumbelQuantizer(num_embeddings, dim, seed=seed, **kwargs)
    layer.build((None, dim))
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(dim, num_embeddings)).astype("float32")
    bias = rng.normal(size=(num_embeddings,)).astype("float32")
    codebook = (
        np.eye(num_embeddings, dtype="float32")
        if identity_codebook
        else rng.normal(size=(num_embeddings, dim)).astype("float32")
    )
    layer.to_logits.set_weights([kernel, bias])
    layer.embeddings.assign(codebook)
    return layer, kernel, bias, codebook


def numpy_kl(logits, num_embeddings):
    """sum_k q_k log(K q_k), q = softmax(logits), averaged over positions."""
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    kl = (q * np.log(num_embeddings * q)).sum(-1)
    return kl.reshape(len(kl), -1).mean(1)


def inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4), (2, 3, 5, 4)])
def test_inference_takes_the_argmax_code_and_the_kl_matches_numpy(shape):
    layer, kernel, bias, codebook = built(kl_weight=0.3)
    x = inputs(shape)
    out = layer(x, training=False)
    logits = x @ kernel + bias
    indices = logits.argmax(-1)
    np.testing.assert_array_equal(to_numpy(out["indices"]), indices)
    np.testing.assert_allclose(to_numpy(out["quantized"]), codebook[indices], atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["kl_loss"]), 0.3 * numpy_kl(logits, 6), rtol=1e-5)
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    np.testing.assert_allclose(
        to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=0
    )


def test_training_samples_are_relaxed_one_hot_vectors_of_the_noisy_argmax():
    layer, kernel, bias, _ = built(num_embeddings=6, dim=6, identity_codebook=True)
    x = inputs((64, 6))
    out = layer(x, training=True)
    sample = to_numpy(out["quantized"])  # the identity codebook gives the sample y
    np.testing.assert_allclose(sample.sum(-1), 1.0, rtol=1e-5)
    assert (sample > 0).all() and sample.max(-1).mean() < 0.95  # soft at temperature 1
    np.testing.assert_array_equal(to_numpy(out["indices"]), sample.argmax(-1))
    # y = softmax((logits + g) / T): log y - logits is the noise g, up to a
    # constant per row, with the spread of a Gumbel(0, 1) (std pi / sqrt(6)).
    logits = x @ kernel + bias
    noise = np.log(sample) - logits
    noise -= noise.mean(-1, keepdims=True)
    assert 0.7 < noise.std() < 1.8
    # The noisy argmax is a sample of softmax(logits): the same as the
    # plain argmax for many rows, not for all.
    agreement = np.mean(sample.argmax(-1) == logits.argmax(-1))
    assert 0.3 < agreement < 1.0

    # Low temperatures approach one-hot vectors.
    layer.temperature.assign(1e-3)
    cold = to_numpy(layer(x, training=True)["quantized"])
    assert np.mean(cold.max(-1) > 0.99) > 0.9


def test_straight_through_samples_are_one_hot_forward_and_soft_backward():
    layer, _, _, codebook = built(straight_through=True)
    twin, _, _, _ = built(straight_through=True)
    x = inputs((32, 4), seed=4)
    out = layer(x, training=True)
    indices = to_numpy(out["indices"])
    np.testing.assert_allclose(to_numpy(out["quantized"]), codebook[indices], atol=1e-6)

    # Backward: the codebook gets the hard sample's gradient, one row per
    # index; the inputs get a non-zero one through the soft sample.
    weights = inputs((32, 4), seed=5)
    grad_x, *grad_weights = gradients(
        twin, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    grad_codebook = dict(zip([v.path for v in twin.trainable_variables], grad_weights))[
        twin.embeddings.path
    ]
    expected = np.zeros_like(codebook)
    np.add.at(expected, indices, weights)
    np.testing.assert_allclose(grad_codebook, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(grad_x).max() > 1e-3


def test_soft_samples_pass_their_gradient_to_the_codebook():
    # Two layers with the same seed draw the same noise: one gives the
    # sample, the other the gradients.
    layer, *_ = built(num_embeddings=6, dim=6, identity_codebook=True, seed=6)
    twin, *_ = built(num_embeddings=6, dim=6, identity_codebook=True, seed=6)
    x = inputs((16, 6), seed=6)
    sample = to_numpy(layer(x, training=True)["quantized"])
    weights = inputs((16, 6), seed=7)
    _, *grad_weights = gradients(
        twin, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    grad_codebook = dict(zip([v.path for v in twin.trainable_variables], grad_weights))[
        twin.embeddings.path
    ]
    # d sum(w * y C) / dC = y^T w.
    np.testing.assert_allclose(grad_codebook, sample.T @ weights, rtol=1e-4, atol=1e-5)


def test_temperature_is_a_non_trainable_weight_that_starts_at_the_argument():
    layer, *_ = built(temperature=0.5)
    assert not layer.temperature.trainable
    assert [v.path for v in layer.non_trainable_weights] == [layer.temperature.path]
    assert float(to_numpy(layer.temperature)) == 0.5
    layer.temperature.assign(0.125)
    # It travels with the weights; the configuration keeps the argument.
    assert layer.get_config()["temperature"] == 0.5
    clone = GumbelQuantizer.from_config(layer.get_config())
    clone.build((None, 4))
    clone.set_weights(layer.get_weights())
    assert float(to_numpy(clone.temperature)) == 0.125


def test_mixed_bfloat16_keeps_logits_and_codebook_in_float32():
    layer, kernel, bias, codebook = built()
    mixed = GumbelQuantizer(6, 4, dtype="mixed_bfloat16")
    mixed.build((None, 4))
    mixed.set_weights(layer.get_weights())
    x = inputs((64, 4), seed=8)
    out = mixed(x)
    np.testing.assert_array_equal(to_numpy(out["indices"]), to_numpy(layer(x)["indices"]))
    assert keras.backend.standardize_dtype(out["quantized"].dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(out["kl_loss"].dtype) == "float32"
    assert {keras.backend.standardize_dtype(w.dtype) for w in mixed.weights} == {"float32"}
    assert mixed.to_logits.compute_dtype == "float32"


def test_config_round_trip():
    layer = GumbelQuantizer(
        32, 8, temperature=0.9, kl_weight=1e-3, straight_through=True, seed=3, name="gumbel"
    )
    config = layer.get_config()
    clone = GumbelQuantizer.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert restored.get_config() == config
    assert (restored.num_embeddings, restored.embedding_dim, restored.straight_through) == (
        32,
        8,
        True,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, r"`temperature` must be in \(0.0, inf\). Received: temperature=0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"kl_weight": -1e-3}, "kl_weight=-0.001"),
        ({"num_embeddings": 0}, "num_embeddings=0"),
        ({"embedding_dim": 2.5}, "embedding_dim=2.5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GumbelQuantizer(**{"num_embeddings": 8, "embedding_dim": 4, **kwargs})


def test_bad_inputs():
    layer, *_ = built()
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\).*shape=\(2, 3\)"):
        layer(np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="float inputs.*int32"):
        layer(np.zeros((2, 4), "int32"))
    with pytest.raises(ValueError, match=r"indices in \[0, 6\).*\[0, 6\]"):
        layer.indices_to_codes(np.array([0, 6]))
    with pytest.raises(ValueError, match="no codebook yet"):
        GumbelQuantizer(8, 4).indices_to_codes(np.array([0]))
