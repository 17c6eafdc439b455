import numpy as np
import pytest
from conftest import to_numpy

from vqkeras import losses


def _softplus(x):
    return np.logaddexp(0.0, x)


def _logits(seed, shape=(3, 2, 2, 1)):
    return np.random.default_rng(seed).normal(scale=2.0, size=shape).astype("float32")


def _per_sample(x):
    return x.reshape(len(x), -1).mean(axis=1)


@pytest.mark.parametrize("shape", [(3, 2, 2, 1), (3,)])
def test_adversarial_losses_match_numpy(shape):
    real, fake = _logits(0, shape), _logits(1, shape)
    expected = {
        "d_hinge": _per_sample(np.maximum(1 - real, 0)) + _per_sample(np.maximum(1 + fake, 0)),
        "d_ns": _per_sample(_softplus(-real)) + _per_sample(_softplus(fake)),
        "g_hinge": -_per_sample(fake),
        "g_ns": _per_sample(_softplus(-fake)),
    }
    got = {
        "d_hinge": losses.discriminator_hinge_loss(real, fake),
        "d_ns": losses.discriminator_non_saturating_loss(real, fake),
        "g_hinge": losses.generator_hinge_loss(fake),
        "g_ns": losses.generator_non_saturating_loss(fake),
    }
    for name, value in got.items():
        value = to_numpy(value)
        assert value.shape == (3,) and value.dtype == np.float32, name
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_lecam_penalty_matches_numpy():
    real, fake = _logits(2), _logits(3)
    ema_real, ema_fake = 0.7, -0.4
    expected = _per_sample((real - ema_fake) ** 2) + _per_sample((fake - ema_real) ** 2)
    got = to_numpy(losses.lecam_penalty(real, fake, ema_real, ema_fake))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Zero exactly when every real logit sits at the fakes' average and vice versa.
    zero = losses.lecam_penalty(np.full((2, 1), -0.4), np.full((2, 1), 0.7), ema_real, ema_fake)
    np.testing.assert_allclose(to_numpy(zero), 0.0, atol=1e-7)


def test_losses_are_float32_for_half_precision_logits():
    real = _logits(4).astype("float16")
    fake = _logits(5).astype("float16")
    for value in (
        losses.discriminator_hinge_loss(real, fake),
        losses.generator_non_saturating_loss(fake),
        losses.lecam_penalty(real, fake, 0.0, 0.0),
    ):
        assert to_numpy(value).dtype == np.float32


def test_a_discriminator_that_separates_well_has_low_losses():
    # Real scored high, fake low: the discriminator's losses are small and
    # the generator's large; swapped, the reverse.
    high, low = np.full((2, 1), 3.0, "float32"), np.full((2, 1), -3.0, "float32")
    assert np.all(to_numpy(losses.discriminator_hinge_loss(high, low)) == 0.0)
    assert np.all(to_numpy(losses.discriminator_hinge_loss(low, high)) == 8.0)
    assert np.all(to_numpy(losses.generator_hinge_loss(low)) == 3.0)
    assert np.all(to_numpy(losses.generator_non_saturating_loss(high)) < 0.05)
