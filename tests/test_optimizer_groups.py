import keras
import numpy as np
import pytest
from conftest import GeneratorCritic, generator_critic_data

from vqkeras.models.optimizer_groups import GroupedOptimizer, OptimizerGroup
from vqkeras.training import fit_resumable


def _weights(model):
    return {
        "generator": [np.array(v) for v in model.generator.get_weights()],
        "critic": [np.array(v) for v in model.critic.get_weights()],
    }


def _one_sgd_step_in_numpy(weights, x, target, generator_rate, critic_rate):
    """The step `GeneratorCritic` takes with SGD, and its adaptive weight."""
    (kernel, bias), (critic_kernel, critic_bias) = weights["generator"], weights["critic"]
    fake = x @ kernel + bias
    d_fit = 2.0 * (fake - target) / fake.size  # d fit_loss / d fake
    d_gen = -np.broadcast_to(critic_kernel[:, 0], fake.shape) / len(x)  # d generator_loss / d fake
    weight = np.linalg.norm(x.T @ d_fit) / (np.linalg.norm(x.T @ d_gen) + 1e-4)
    d_fake = d_fit + weight * d_gen
    real_active = (1.0 - (target @ critic_kernel + critic_bias)) > 0  # hinge terms that count
    fake_active = (1.0 + (fake @ critic_kernel + critic_bias)) > 0
    d_critic_kernel = (-(target * real_active).mean(0) + (fake * fake_active).mean(0))[:, None]
    d_critic_bias = -real_active.mean(0) + fake_active.mean(0)
    return {
        "generator": [
            kernel - generator_rate * x.T @ d_fake,
            bias - generator_rate * d_fake.sum(0),
        ],
        "critic": [
            critic_kernel - critic_rate * d_critic_kernel,
            critic_bias - critic_rate * d_critic_bias,
        ],
    }, weight


def _compiled_model(generator_optimizer, critic_optimizer=None):
    model = GeneratorCritic()
    model.build((None, 4))
    kwargs = {} if critic_optimizer is None else {"critic_optimizer": critic_optimizer}
    model.compile(optimizer=generator_optimizer, **kwargs)
    return model


@pytest.mark.parametrize("generator_rate, critic_rate", [(0.1, 0.0), (0.0, 0.2), (0.1, 0.2)])
def test_each_optimizer_takes_its_own_groups_step_with_the_adaptive_weight(
    generator_rate, critic_rate
):
    x, target = generator_critic_data()
    model = _compiled_model(keras.optimizers.SGD(generator_rate), keras.optimizers.SGD(critic_rate))
    before = _weights(model)
    history = model.fit(x, target, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    after = _weights(model)
    expected, weight = _one_sgd_step_in_numpy(before, x, target, generator_rate, critic_rate)
    for group in ("generator", "critic"):
        for got, want, old in zip(after[group], expected[group], before[group]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=group)
            # A zero learning rate leaves the group exactly as it was: the
            # other group's optimizer never touches it.
            rate = generator_rate if group == "generator" else critic_rate
            assert np.array_equal(got, old) == (rate == 0.0), group
    np.testing.assert_allclose(history.history["adaptive_weight"][0], weight, rtol=1e-4)
    assert set(history.history) >= {"loss", "fit_loss", "generator_loss", "critic_loss"}


def test_resumed_training_continues_both_optimizers_states(tmp_path):
    x, target = generator_critic_data(n=32)

    def run(out, epochs):
        keras.utils.set_random_seed(5)
        model = _compiled_model(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(3e-2))
        # One batch per epoch: the shuffled order of a resumed epoch plays no part.
        fit_resumable(model, x, str(out), epochs=epochs, batch_size=len(x), y=target, verbose=0)
        return model

    straight = run(tmp_path / "straight", 3)
    run(tmp_path / "resumed", 1)
    resumed = run(tmp_path / "resumed", 3)  # a new process would do the same
    for group, optimizer in resumed.optimizer.group_optimizers.items():
        assert int(optimizer.iterations.numpy()) == 3, group
    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Adam's moments too: a resumed run without them would drift from the first step.
    for got, want in zip(resumed.optimizer.variables, straight.optimizer.variables):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-7)


def test_compile_takes_one_optimizer_per_group():
    model = _compiled_model(keras.optimizers.Adam(2e-3))
    assert isinstance(model.optimizer, GroupedOptimizer)
    generator, critic = model.optimizer.optimizers
    # Without critic_optimizer, the critic gets a copy of the main optimizer.
    assert critic is not generator and isinstance(critic, keras.optimizers.Adam)
    assert float(critic.learning_rate) == pytest.approx(2e-3)
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    with pytest.raises(
        TypeError, match=r"discriminator_optimizer.*optimizer, \['critic_optimizer'\]"
    ):
        GeneratorCritic().compile(optimizer="adam", discriminator_optimizer="adam")


def test_bad_groups_get_clear_errors():
    class Overlapping(GeneratorCritic):
        @property
        def optimizer_groups(self):
            return (
                OptimizerGroup("generator", ("fit_loss",), layers=("generator", "critic")),
                OptimizerGroup("critic", ("critic_loss",), layers=("critic",)),
            )

    model = Overlapping()
    model.build((None, 4))
    with pytest.raises(ValueError, match=r"in the optimizer groups 'generator' and 'critic'"):
        model.compile(optimizer="sgd")
        model.fit(*generator_critic_data(), verbose=0)

    class UnknownTerm(GeneratorCritic):
        @property
        def optimizer_groups(self):
            return (OptimizerGroup("generator", ("fit_loss", "gan_loss")),)

    with pytest.raises(ValueError, match=r"names loss terms \['gan_loss'\]"):
        UnknownTerm().compile(optimizer="sgd")


def test_a_keras_file_keeps_every_groups_optimizer(tmp_path):
    x, target = generator_critic_data()
    model = _compiled_model(keras.optimizers.Adam(1e-2), keras.optimizers.SGD(0.3))
    model.fit(x, target, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(
        tmp_path / "model.keras",
        custom_objects={"GeneratorCritic": GeneratorCritic},
    )
    generator, critic = loaded.optimizer.optimizers
    assert isinstance(generator, keras.optimizers.Adam)
    assert isinstance(critic, keras.optimizers.SGD)
    assert float(critic.learning_rate) == pytest.approx(0.3)
    for got, want in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(got), np.array(want))


def test_mixed_float16_scales_each_groups_loss_with_its_own_optimizer():
    keras.config.set_dtype_policy("mixed_float16")
    x, target = generator_critic_data()
    model = _compiled_model(keras.optimizers.SGD(0.05), keras.optimizers.SGD(0.05))
    optimizers = model.optimizer.optimizers
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers)
    before = _weights(model)
    history = model.fit(x, target, batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(values).all() for values in history.history.values())
    after = _weights(model)
    for group in ("generator", "critic"):  # both groups took (unscaled) steps
        change = max(np.max(np.abs(a - b)) for a, b in zip(after[group], before[group]))
        assert 0 < change < 1, group


def test_gradient_norm_of_terms_independent_of_the_variable_is_zero():
    # The critic's term sees the generator's output through stop_gradient: its
    # gradient with respect to the generator's kernel is zero on every backend
    # (TensorFlow and PyTorch give None for it).
    class Probe(GeneratorCritic):
        def adaptive_loss_weights(self, terms, gradient_norm):
            norm = gradient_norm(["critic_loss"], self.generator.kernel)
            return {"generator_loss": norm + 1.0}

    model = Probe()
    model.build((None, 4))
    model.compile(optimizer=keras.optimizers.SGD(0.0), critic_optimizer=keras.optimizers.SGD(0.0))
    x, target = generator_critic_data()
    history = model.fit(x, target, batch_size=len(x), epochs=1, verbose=0)
    assert history.history["adaptive_weight"] == [1.0]
