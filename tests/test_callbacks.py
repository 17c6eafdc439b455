import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy

from vqkeras.callbacks import GumbelTemperatureSchedule, StopOnNaN
from vqkeras.layers import ConvDecoder, ConvEncoder, GumbelQuantizer
from vqkeras.models import VQVAE


def gumbel_vqvae():
    model = VQVAE(
        encoder=ConvEncoder(8, channels=(8, 16), num_residual_blocks=0),
        decoder=ConvDecoder(1, channels=(16, 8), num_residual_blocks=0),
        quantizer=GumbelQuantizer(16, 8, straight_through=True, seed=0),
    )
    model.build((None, 16, 16, 1))
    return model


def test_the_schedule_decays_exponentially_to_the_final_temperature():
    schedule = GumbelTemperatureSchedule(decay_steps=100)
    values = [schedule.temperature(step) for step in (0, 25, 50, 100, 1000)]
    np.testing.assert_allclose(values, [1.0, 0.5, 0.25, 1 / 16, 1 / 16])
    schedule = GumbelTemperatureSchedule(10, initial_temperature=2.0, final_temperature=0.5)
    np.testing.assert_allclose(schedule.temperature(5), 1.0)


def test_fit_anneals_the_temperature_step_by_step_and_resumes_from_the_optimizer():
    model = gumbel_vqvae()
    model.compile(optimizer="adam")
    schedule = GumbelTemperatureSchedule(decay_steps=8)
    temperature = model.quantizer.temperature
    # Two epochs of 3 steps: steps 0 to 5, the last one at temperature(5).
    model.fit(blob_images(12), epochs=2, batch_size=4, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(to_numpy(temperature), 16 ** (-5 / 8), rtol=1e-6)
    # A second fit goes on from the optimizer's 6 updates: steps 6 to 9.
    model.fit(blob_images(16), epochs=1, batch_size=4, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(to_numpy(temperature), 1 / 16, rtol=1e-6)
    assert int(to_numpy(model.optimizer.iterations)) == 10


def test_each_step_runs_at_its_scheduled_temperature():
    # Two copies of a model with soft samples and the same noise, whose
    # weights stay put: one annealed from 1 to 0.1 in one step, the other
    # at 0.1 throughout. Their second steps agree, their first do not.
    images = blob_images(8)
    losses = []
    for callbacks in ([GumbelTemperatureSchedule(1, final_temperature=0.1)], []):
        keras.utils.set_random_seed(7)
        model = gumbel_vqvae()
        model.quantizer.straight_through = False
        # Far-apart codes, so that the mixtures differ in the reconstructions.
        model.quantizer.embeddings.assign(10 * model.quantizer.embeddings)
        if not callbacks:
            model.quantizer.temperature.assign(0.1)
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        history = model.fit(images, epochs=2, batch_size=8, callbacks=callbacks, verbose=0)
        losses.append(history.history["reconstruction_loss"])
    (annealed_first, annealed_second), (cold_first, cold_second) = losses
    assert abs(annealed_first - cold_first) > 0.01 * cold_first
    np.testing.assert_allclose(annealed_second, cold_second, rtol=1e-5)


def test_a_model_without_gumbel_quantizers_is_an_error():
    model = small_vqvae()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="GumbelQuantizer layers, and model 'vqvae.*' has none"):
        model.fit(blob_images(4), callbacks=[GumbelTemperatureSchedule(10)], verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decay_steps": 0}, "decay_steps=0"),
        ({"decay_steps": 10, "initial_temperature": 0}, "initial_temperature=0"),
        ({"decay_steps": 10, "final_temperature": -1.0}, "final_temperature=-1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GumbelTemperatureSchedule(**kwargs)


def test_stop_on_nan_names_the_terms_that_blew_up():
    callback = StopOnNaN()
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(0, {"loss": 1.0})
    with pytest.raises(FloatingPointError, match="epoch 3, batch 5: loss=nan"):
        callback.on_train_batch_end(5, {"loss": float("nan"), "kl_loss": 0.1})


def unbuilt_gumbel_vqvae():
    return VQVAE(
        encoder=ConvEncoder(8, channels=(8, 16), num_residual_blocks=0),
        decoder=ConvDecoder(1, channels=(16, 8), num_residual_blocks=0),
        quantizer=GumbelQuantizer(16, 8, straight_through=True, seed=0),
    )


@pytest.mark.parametrize("build", [False, True])
def test_an_unbuilt_model_is_annealed_from_its_first_step(build):
    # TensorFlow's fit builds a subclassed model in its first step, the
    # other backends' before it; `build` makes it built beforehand everywhere.
    # The schedule starts at 2, the quantizer's own temperature is 1.
    model = unbuilt_gumbel_vqvae()
    if build:
        model.build((None, 16, 16, 1))
    model.compile(optimizer="adam")
    schedule = GumbelTemperatureSchedule(1, initial_temperature=2.0, final_temperature=2.0)
    model.fit(blob_images(4), epochs=1, batch_size=4, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(to_numpy(model.quantizer.temperature), 2.0)


def test_a_hand_driven_schedule_anneals_an_unbuilt_model_and_needs_an_optimizer():
    model = unbuilt_gumbel_vqvae()
    schedule = GumbelTemperatureSchedule(decay_steps=4, initial_temperature=2.0)
    schedule.set_model(model)
    schedule.on_train_begin()
    with pytest.raises(ValueError, match="optimizer, and model 'vqvae.*' has none: compile it"):
        schedule.on_train_batch_begin(0)
    model.compile(optimizer="adam")
    schedule.on_train_batch_begin(0)
    # Built after the first batch began, from the scheduled temperature.
    model.build((None, 16, 16, 1))
    np.testing.assert_allclose(to_numpy(model.quantizer.temperature), 2.0)
    schedule.on_train_batch_end(0)
    schedule.on_train_batch_begin(1)
    expected = 2.0 * (1 / 32) ** (1 / 4)
    np.testing.assert_allclose(to_numpy(model.quantizer.temperature), expected, rtol=1e-6)
