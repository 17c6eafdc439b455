import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers.gaussian_sampler import GaussianSampler


def numpy_kl(mean, logvar):
    return 0.5 * np.sum(mean**2 + np.exp(logvar) - 1.0 - logvar, axis=tuple(range(1, mean.ndim)))


def random_parameters(shape=(4, 3, 3, 2), low=-3.0, high=2.0, seed=0):
    """Inputs of `shape` with means then log-variances on the last axis."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=shape).astype("float32")
    logvar = rng.uniform(low, high, size=shape).astype("float32")
    return np.concatenate([mean, logvar], axis=-1), mean, logvar


def test_kl_equals_its_closed_form_in_numpy():
    inputs, mean, logvar = random_parameters()
    out = GaussianSampler()(inputs)
    assert tuple(out["kl"].shape) == (4,)
    assert keras.backend.standardize_dtype(out["kl"].dtype) == "float32"
    np.testing.assert_allclose(to_numpy(out["kl"]), numpy_kl(mean, logvar), rtol=1e-5)


def test_mean_at_inference_and_samples_in_training_or_on_request():
    inputs, mean, logvar = random_parameters()
    sampler = GaussianSampler(seed=1)
    inference = sampler(inputs)
    np.testing.assert_array_equal(to_numpy(inference["latents"]), mean)
    np.testing.assert_array_equal(to_numpy(inference["mean"]), mean)
    np.testing.assert_array_equal(to_numpy(inference["logvar"]), logvar)
    for out in (sampler(inputs, training=True), sampler(inputs, sample=True)):
        assert tuple(out["latents"].shape) == (4, 3, 3, 2)
        assert not np.allclose(to_numpy(out["latents"]), mean)
    np.testing.assert_array_equal(
        to_numpy(sampler(inputs, training=True, sample=False)["latents"]), mean
    )


def test_samples_have_the_right_mean_and_std():
    n = 100_000
    mean = np.tile(np.float32([[1.5, -0.5]]), (n, 1))
    logvar = np.tile(np.log(np.float32([[0.25, 4.0]])), (n, 1))
    latents = to_numpy(
        GaussianSampler(seed=0)(np.concatenate([mean, logvar], -1), training=True)["latents"]
    )
    # Standard errors of the mean: 0.0016 and 0.0063; of the std, about 0.2%.
    np.testing.assert_allclose(latents.mean(axis=0), [1.5, -0.5], atol=0.03)
    np.testing.assert_allclose(latents.std(axis=0), [0.5, 2.0], rtol=0.015)


def test_gradient_flows_to_mean_and_logvar():
    sampler = GaussianSampler(seed=2)
    inputs, mean, logvar = random_parameters(shape=(64, 4, 4, 8), low=-1.0, high=1.0)
    sampler.build(inputs.shape)
    grad = gradients(sampler, inputs, lambda out: keras.ops.sum(out["latents"]))[0]
    # dz/dmean = 1; dz/dlogvar = 0.5 * std * eps, zero mean, std 0.5 * std.
    np.testing.assert_allclose(grad[..., :8], 1.0)
    scaled_noise = grad[..., 8:] / (0.5 * np.exp(0.5 * logvar))
    assert abs(scaled_noise.mean()) < 0.05
    np.testing.assert_allclose(scaled_noise.std(), 1.0, rtol=0.05)

    # The KL gradient: d/dmean = mean, d/dlogvar = 0.5 * (exp(logvar) - 1).
    grad = gradients(sampler, inputs, lambda out: keras.ops.sum(out["kl"]))[0]
    np.testing.assert_allclose(grad[..., :8], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[..., 8:], 0.5 * (np.exp(logvar) - 1.0), rtol=1e-5, atol=1e-6)


def test_logvar_is_clamped_and_gets_no_gradient_beyond_the_clamp():
    mean = np.zeros((2, 3), "float32")
    logvar = np.float32([[-50.0, 0.5, 40.0], [-2.5, 2.5, 1.0]])
    inputs = np.concatenate([mean, logvar], axis=-1)
    sampler = GaussianSampler(logvar_min=-2.0, logvar_max=2.0)
    sampler.build(inputs.shape)
    clamped = np.clip(logvar, -2.0, 2.0)
    out = sampler(inputs)
    np.testing.assert_array_equal(to_numpy(out["logvar"]), clamped)
    np.testing.assert_allclose(to_numpy(out["kl"]), numpy_kl(mean, clamped), rtol=1e-6)
    grad = gradients(sampler, inputs, lambda out: keras.ops.sum(out["kl"]))[0][:, 3:]
    inside = np.abs(logvar) < 2.0
    np.testing.assert_array_equal(grad[~inside], 0.0)
    np.testing.assert_allclose(grad[inside], 0.5 * (np.exp(logvar[inside]) - 1.0), rtol=1e-5)
    # The default clamp, [-30, 20], keeps exp finite for any input.
    out = GaussianSampler()(np.float32([[0.0, 1e4]]), training=True)
    assert np.isfinite(to_numpy(out["latents"])).all() and np.isfinite(to_numpy(out["kl"])).all()


def test_same_seed_reproduces_draws_and_draws_differ_between_calls():
    inputs, _, _ = random_parameters()
    first, second = GaussianSampler(seed=7), GaussianSampler(seed=7)
    a, b = (to_numpy(s(inputs, training=True)["latents"]) for s in (first, second))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, to_numpy(first(inputs, training=True)["latents"]))
    assert not np.allclose(a, to_numpy(GaussianSampler(seed=8)(inputs, training=True)["latents"]))


def test_samples_in_a_jitted_function_on_every_backend():
    # A Sequential model jit-compiles `predict`; with a SeedGenerator
    # attribute the sampler also draws inside the JAX trace.
    class Sampling(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.sampler = GaussianSampler(seed=3)

        def call(self, inputs):
            return self.sampler(inputs, sample=True)["latents"]

    model = keras.Sequential([keras.Input((4,)), Sampling()])
    inputs = np.zeros((512, 4), "float32")
    latents = model.predict(inputs, batch_size=256, verbose=0)
    assert latents.shape == (512, 2)
    np.testing.assert_allclose(latents.std(), 1.0, rtol=0.1)
    assert not np.allclose(latents[:256], latents[256:])


def test_mixed_precision_returns_latents_in_compute_dtype_and_kl_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    inputs, mean, logvar = random_parameters()
    out = GaussianSampler()(inputs, training=True)
    assert keras.backend.standardize_dtype(out["latents"].dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(out["kl"].dtype) == "float32"
    np.testing.assert_allclose(to_numpy(out["kl"]), numpy_kl(mean, logvar), rtol=1e-5)


def test_symbolic_call_gives_output_shapes():
    out = GaussianSampler()(keras.Input((5, 5, 6)))
    assert tuple(out["latents"].shape) == (None, 5, 5, 3)
    assert tuple(out["kl"].shape) == (None,)


def test_config_round_trip():
    sampler = GaussianSampler(logvar_min=-10, logvar_max=5, seed=4, name="posterior")
    config = sampler.get_config()
    assert config["logvar_min"] == -10.0 and config["logvar_max"] == 5.0 and config["seed"] == 4
    restored = GaussianSampler.from_config(config)
    assert restored.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
    inputs, _, _ = random_parameters()
    np.testing.assert_array_equal(
        to_numpy(restored(inputs, training=True)["latents"]),
        to_numpy(sampler(inputs, training=True)["latents"]),
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"logvar_min": 1.0, "logvar_max": 1.0}, r"less than.*logvar_min=1.0, logvar_max=1.0"),
        ({"logvar_min": float("nan")}, r"logvar_min.*Received: logvar_min=nan"),
        ({"logvar_max": "20"}, r"number.*Received: logvar_max='20'"),
        ({"seed": 1.5}, r"integer or None.*Received: seed=1.5"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianSampler(**kwargs)


def test_bad_inputs_get_clear_errors():
    sampler = GaussianSampler()
    with pytest.raises(ValueError, match=r"even number of channels.*\(2, 4, 4, 3\)"):
        sampler(np.zeros((2, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 2 \* D\).*\(4,\)"):
        sampler(np.zeros((4,), "float32"))
    with pytest.raises(TypeError, match=r"float inputs.*int32"):
        sampler(np.zeros((2, 4), "int32"))
