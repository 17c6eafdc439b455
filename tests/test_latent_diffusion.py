import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops

from vqkeras.layers import DiffusionUNet
from vqkeras.models import LatentDiffusion

SHAPE = (4, 4, 2)
TINY = {"channels": 8, "channel_multipliers": (1, 2), "num_blocks": 1, "groups": 4}


def tiny_model(num_classes=3, **kwargs):
    return LatentDiffusion(SHAPE, num_classes=num_classes, **{**TINY, **kwargs})


def randomize_outputs(model, seed=0):
    """Random output convolutions: the zero-initialized ones make every
    velocity 0, which would hide what the tests compare."""
    model.build()
    kernel, bias = model.denoiser.conv_out.get_weights()
    kernel = np.random.default_rng(seed).normal(scale=0.1, size=kernel.shape).astype("float32")
    # The same in both: the average starts as a copy.
    for denoiser in (model.denoiser, model.ema_denoiser):
        denoiser.conv_out.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def conditional():
    return randomize_outputs(tiny_model())


def weights(layer):
    return [to_numpy(w) for w in layer.weights]


def toy_latents(n=64, seed=0):
    """Latents that are one of three fixed grids, labelled by which."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(3, *SHAPE)).astype("float32")
    labels = np.arange(n) % 3
    return patterns[labels], labels.astype("int32")


def test_interpolation_and_velocity_target_match_numpy():
    rng = np.random.default_rng(0)
    x0, noise = rng.normal(size=(2, 5, *SHAPE)).astype("float32")
    t = np.array([0.0, 0.25, 0.5, 0.9, 1.0], dtype="float32")
    x_t, target = LatentDiffusion.interpolate(ops.convert_to_tensor(x0), noise, t)
    expected = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
    np.testing.assert_allclose(to_numpy(x_t), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(target), noise - x0, atol=1e-6)
    # The ends of the path: the data at t=0, the noise at t=1.
    np.testing.assert_allclose(to_numpy(x_t)[0], x0[0], atol=1e-6)
    np.testing.assert_allclose(to_numpy(x_t)[-1], noise[-1], atol=1e-6)


def test_time_distributions_lie_in_the_unit_interval():
    for distribution, mean_range in (("uniform", (0.48, 0.52)), ("logit_normal", (0.48, 0.52))):
        times = to_numpy(tiny_model(time_distribution=distribution).draw_times(20000))
        assert times.min() >= 0.0 and times.max() <= 1.0
        assert mean_range[0] < times.mean() < mean_range[1]
    # Logit-normal puts fewer times near the ends: P(t < 0.1) = Phi(logit(0.1)) = 1.4%.
    uniform = to_numpy(tiny_model().draw_times(20000))
    logit_normal = to_numpy(tiny_model(time_distribution="logit_normal").draw_times(20000))
    assert abs((uniform < 0.1).mean() - 0.1) < 0.01
    assert abs((logit_normal < 0.1).mean() - 0.0140) < 0.005


def test_label_dropout_replaces_about_ten_percent_by_the_null_class():
    model = tiny_model(num_classes=5)
    labels = np.arange(20000) % 5
    dropped = to_numpy(model.drop_labels(labels, training=True))
    replaced = dropped != labels
    # 10% of 20000: binomial standard deviation 0.002.
    assert abs(replaced.mean() - 0.1) < 0.01
    assert np.all(dropped[replaced] == 5)
    np.testing.assert_array_equal(to_numpy(model.drop_labels(labels, training=False)), labels)


@pytest.fixture(scope="module")
def trained():
    """A prior after two SGD steps, with its denoiser's weights before the
    first step and after each."""
    model = randomize_outputs(tiny_model(ema_decay=0.05))
    latents, labels = toy_latents(8)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = [weights(model.denoiser), weights(model.ema_denoiser)]
    for _ in range(2):
        model.fit(latents, labels, batch_size=8, epochs=1, verbose=0)
        history.append(weights(model.denoiser))
    return model, history


def test_ema_update_matches_numpy_and_only_training_updates_it(trained):
    model, (initial, initial_average, first, second) = trained
    for average, weight in zip(initial_average, initial):
        np.testing.assert_array_equal(average, weight)
    assert max(np.abs(a - b).max() for a, b in zip(first, second)) > 1e-4
    # The first update copies (d_0 = min(0.05, 0 / 10) = 0), the second has
    # d_1 = min(0.05, 1 / 11) = 0.05.
    for average, a, b in zip(weights(model.ema_denoiser), first, second):
        np.testing.assert_allclose(average, 0.05 * a + 0.95 * b, atol=1e-6)
    assert int(to_numpy(model.ema_updates)) == 2
    before = weights(model.ema_denoiser)
    latents, labels = toy_latents(8)
    model.evaluate(latents, labels, batch_size=8, verbose=0)
    for average, old in zip(weights(model.ema_denoiser), before):
        np.testing.assert_array_equal(average, old)


def test_a_few_fit_steps_reduce_the_loss():
    keras.utils.set_random_seed(0)
    model = tiny_model(ema_decay=0.9)
    latents, labels = toy_latents(64)
    latents = 2.0 + 0.3 * latents
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    history = model.fit(latents, labels, batch_size=16, epochs=3, verbose=0).history
    # Untrained (zero output): E|noise - x0|^2 = 1 + E x0^2, about 5; the mean
    # velocity -E x0 alone brings it to about 1.1.
    assert history["mse"][0] > 2.5, history["mse"]
    assert history["mse"][-1] < 0.5 * history["mse"][0], history["mse"]


def test_guidance_zero_and_one_give_the_unconditional_and_conditional_velocity(conditional):
    rng = np.random.default_rng(1)
    x = ops.convert_to_tensor(rng.normal(size=(4, *SHAPE)).astype("float32"))
    t = ops.convert_to_tensor(np.array([0.1, 0.4, 0.7, 1.0], dtype="float32"))
    labels = ops.convert_to_tensor(np.array([0, 1, 2, 1], dtype="int32"))
    v_c = to_numpy(conditional.velocity(x, t, labels))
    v_u = to_numpy(conditional.velocity(x, t, None))
    assert np.abs(v_c - v_u).max() > 1e-3
    # The guided velocity runs a batch of 8: float tolerance across batch sizes.
    guided = {s: to_numpy(conditional.guided_velocity(x, t, labels, s)) for s in (0.0, 1.0, 3.0)}
    np.testing.assert_allclose(guided[0.0], v_u, atol=1e-5)
    np.testing.assert_allclose(guided[1.0], v_c, atol=1e-5)
    np.testing.assert_allclose(guided[3.0], v_u + 3.0 * (v_c - v_u), atol=1e-4)
    # Whole samples: guidance 0 is the unconditional sampler (one batch of 4
    # against a guided batch of 8).
    arguments = {"num_steps": 3, "seed": 5}
    np.testing.assert_allclose(
        to_numpy(conditional.sample(4, labels=[0, 1, 2, 1], guidance_scale=0.0, **arguments)),
        to_numpy(conditional.sample(4, **arguments)),
        atol=1e-4,
    )


def test_seeds_give_identical_samples_on_a_backend(conditional):
    labels = np.array([2, 0, 1])
    first = to_numpy(conditional.sample(3, labels=labels, num_steps=2, sampler="heun", seed=7))
    again = to_numpy(conditional.sample(3, labels=labels, num_steps=2, sampler="heun", seed=7))
    other = to_numpy(conditional.sample(3, labels=labels, num_steps=2, sampler="heun", seed=8))
    assert first.shape == (3, *SHAPE) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-2


class GaussianTarget(LatentDiffusion):
    """A prior whose velocity is the exact one of a Gaussian target N(mu, s^2)
    per value: with a = 1 - t, x_t ~ N(a mu, a^2 s^2 + t^2) and E[noise - x0
    | x_t] = (t - a s^2) / (a^2 s^2 + t^2) (x_t - a mu) - mu. The ODE maps
    the noise z onto mu + s z exactly."""

    MU = np.array([[1.5, -1.0], [0.0, 2.0]], dtype="float32")[..., None]
    STD = np.array([[0.5, 1.0], [2.0, 0.3]], dtype="float32")[..., None]

    def _velocity(self, x, t, labels, use_ema):
        t = ops.reshape(t, (-1, 1, 1, 1))
        a = 1.0 - t
        variance = a * a * self.STD**2 + t * t
        return (t - a * self.STD**2) / variance * (x - a * self.MU) - self.MU


def test_samplers_reach_a_gaussian_target_and_heun_beats_euler():
    model = GaussianTarget((2, 2, 1), channels=8, channel_multipliers=(1,), num_blocks=1, groups=4)
    num = 2048
    exact = GaussianTarget.MU + GaussianTarget.STD * to_numpy(model.initial_noise(num, seed=3))
    errors = {}
    for sampler in ("euler", "heun"):
        samples = to_numpy(model.sample(num, num_steps=10, sampler=sampler, seed=3))
        errors[sampler] = np.abs(samples - exact).max()
    # Euler's first-order error on the curved paths against Heun's second-order one
    # (NumPy: 0.27 and 0.007 for one of these targets).
    assert errors["heun"] < 0.05, errors
    assert errors["euler"] > 10 * errors["heun"], errors
    samples = to_numpy(model.sample(num, num_steps=50, sampler="euler", seed=4))
    # Sampling error of the mean s / sqrt(2048) <= 0.045, of the std <= 0.032 (s = 2).
    np.testing.assert_allclose(samples.mean(axis=0), GaussianTarget.MU, atol=0.15)
    np.testing.assert_allclose(samples.std(axis=0), GaussianTarget.STD, atol=0.12, rtol=0.05)


def test_save_and_load_keep_weights_averages_and_samples(trained, tmp_path):
    model = trained[0]
    raw, average = weights(model.denoiser), weights(model.ema_denoiser)
    assert max(np.abs(a - b).max() for a, b in zip(raw, average)) > 1e-4
    arguments = {"labels": np.array([0, 1]), "num_steps": 2, "seed": 1}
    expected = to_numpy(model.sample(2, **arguments))

    model.save(tmp_path / "prior.keras")
    loaded = keras.saving.load_model(tmp_path / "prior.keras", compile=False)
    fresh = tiny_model(ema_decay=0.05)
    fresh.build()
    model.save_weights(tmp_path / "prior.weights.h5")
    fresh.load_weights(tmp_path / "prior.weights.h5")
    for copy in (loaded, fresh):
        assert isinstance(copy, LatentDiffusion)
        for a, b in zip(weights(copy.denoiser), raw):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(weights(copy.ema_denoiser), average):
            np.testing.assert_array_equal(a, b)
        assert int(to_numpy(copy.ema_updates)) == 2
    np.testing.assert_allclose(to_numpy(loaded.sample(2, **arguments)), expected, atol=1e-5)
    x = np.random.default_rng(2).normal(size=(2, *SHAPE)).astype("float32")
    for use_ema in (True, False):
        np.testing.assert_allclose(
            to_numpy(fresh.velocity(x, 0.5, [0, 1], use_ema=use_ema)),
            to_numpy(model.velocity(x, 0.5, [0, 1], use_ema=use_ema)),
            atol=1e-6,
        )
    assert loaded.get_config() == model.get_config()


def test_latent_scaling_is_recorded_in_the_config():
    scaling = {"scaling_factor": 0.5, "shift_factor": -0.1}
    model = tiny_model(latent_scaling=scaling)
    assert model.get_config()["latent_scaling"] == scaling
    assert LatentDiffusion.from_config(model.get_config()).latent_scaling == scaling
    with pytest.raises(ValueError, match="latent_scaling"):
        tiny_model(latent_scaling={"scale": 0.5})


def test_the_unet_keeps_grids_that_its_levels_do_not_divide():
    unet = DiffusionUNet(3, channels=8, channel_multipliers=(1, 2), num_blocks=1, groups=4)
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    out = unet(x, np.array([0.2, 0.8], dtype="float32"))
    assert tuple(out.shape) == (2, 5, 7, 3)


def test_bad_inputs_give_clear_errors(conditional):
    latents, labels = toy_latents(4)
    with pytest.raises(ValueError, match=r"built for latents of shape \(batch, 4, 4, 2\)"):
        conditional.fit(np.zeros((4, 8, 8, 2), "float32"), labels, verbose=0)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        conditional.fit(latents, labels + 3, verbose=0)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        conditional.sample(2, labels=[0, 3])
    for steps in (0, -2):
        with pytest.raises(ValueError, match="num_steps"):
            conditional.sample(2, num_steps=steps)
    with pytest.raises(ValueError, match="sampler"):
        conditional.sample(2, sampler="ddim")
    with pytest.raises(ValueError, match="needs `labels`"):
        conditional.sample(2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        conditional.sample(2, labels=[0, 1], guidance_scale=-1.0)
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4, 2\)"):
        conditional.velocity(np.zeros((1, 4, 4, 3), "float32"), 0.5)
    unconditional = tiny_model(num_classes=None)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.sample(2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="latent_shape"):
        LatentDiffusion((4, 4))
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_model(ema_decay=1.0)
