import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers.diagonal_gaussian import DiagonalGaussian


def numpy_kl(mean, logvar):
    return 0.5 * np.sum(mean**2 + np.exp(logvar) - 1.0 - logvar, axis=tuple(range(1, mean.ndim)))


def test_kl_std_and_mode_match_numpy():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    logvar = rng.uniform(-3, 2, size=(3, 4, 4, 2)).astype("float32")
    posterior = DiagonalGaussian(mean, logvar)
    np.testing.assert_allclose(to_numpy(posterior.kl()), numpy_kl(mean, logvar), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(posterior.std), np.exp(0.5 * logvar), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(posterior.var), np.exp(logvar), rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(posterior.mode()), mean)
    assert tuple(posterior.kl().shape) == (3,)


def test_standard_normal_has_zero_kl():
    posterior = DiagonalGaussian(np.zeros((2, 5), "float32"), np.zeros((2, 5), "float32"))
    np.testing.assert_allclose(to_numpy(posterior.kl()), [0.0, 0.0], atol=1e-7)


def test_samples_have_the_posterior_mean_and_std():
    mean = np.full((200_000, 2), [1.5, -0.5], "float32")
    logvar = np.full((200_000, 2), np.log([0.25, 4.0]), "float32")
    samples = to_numpy(DiagonalGaussian(mean, logvar).sample(seed=0))
    # Standard errors: 0.5 / sqrt(2e5) ~ 0.001 and 2 / sqrt(2e5) ~ 0.0045.
    np.testing.assert_allclose(samples.mean(axis=0), [1.5, -0.5], atol=0.02)
    np.testing.assert_allclose(samples.std(axis=0), [0.5, 2.0], rtol=0.01)


def test_same_seed_gives_same_sample():
    posterior = DiagonalGaussian(np.zeros((4, 3), "float32"), np.zeros((4, 3), "float32"))
    first = to_numpy(posterior.sample(seed=keras.random.SeedGenerator(5)))
    again = to_numpy(posterior.sample(seed=keras.random.SeedGenerator(5)))
    other = to_numpy(posterior.sample(seed=keras.random.SeedGenerator(6)))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_bad_parameters_get_clear_errors():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\) and \(2, 4\)"):
        DiagonalGaussian(np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match=r"at least 2 axes.*\(3,\)"):
        DiagonalGaussian(np.zeros(3, "float32"), np.zeros(3, "float32"))
    with pytest.raises(TypeError, match=r"float `logvar`.*int32"):
        DiagonalGaussian(np.zeros((2, 3), "float32"), np.zeros((2, 3), "int32"))
