import json
import math
import os
import statistics
import time

import keras

from vqkeras import validation
from vqkeras.file_io import write_json_atomic
from vqkeras.layers.gumbel_quantizer import GumbelQuantizer


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with a clear error as soon as a logged value is NaN or inf.

    The models of vqkeras add it to every `fit`, so a diverging run fails at
    once, naming the batch and the terms that blew up, instead of training on
    garbage. (`keras.callbacks.TerminateOnNaN` only looks at the total loss.)
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not math.isfinite(float(v))}
        if bad:
            values = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
            raise FloatingPointError(
                f"Training stopped: non-finite values at epoch {getattr(self, '_epoch', 0) + 1}, "
                f"batch {batch}: {values}. Expected finite losses. Check the input "
                "images for NaN or inf values, and try a lower learning rate."
            )


class GumbelTemperatureSchedule(keras.callbacks.Callback):
    """Anneals the temperature of every `GumbelQuantizer` of the model.

    Exponential decay per training step, from `initial_temperature` to
    `final_temperature` over `decay_steps` steps, then constant:

        temperature(t) = initial * (final / initial) ** (min(t, decay_steps) / decay_steps)

    where t counts the optimizer's updates before the step
    (`model.optimizer.iterations`), so the first step of training runs at
    `initial_temperature`, and a resumed or continued `fit` goes on where
    the last one stopped. DALL-E anneals from 1 to 1/16 over its first
    150,000 updates (there with a cosine schedule).

    The model may be unbuilt when training begins (TensorFlow's `fit`
    builds a subclassed model in its first step): a quantizer without its
    variable yet gets the scheduled temperature as the one it starts from
    (its `temperature` argument, in its config too). The model must be
    compiled: the optimizer counts the steps.

    The quantizers are found through `self.model` and their `temperature`
    variables assigned before each step whose temperature differs from the
    last one's. Under JAX, reaching `self.model` mid-epoch writes the state
    that `fit` keeps outside the variables back into them, and the step
    reads them again: a little time on every step of the decay, none after
    it.

    Args:
        decay_steps: the number of training steps to reach
            `final_temperature`.
        initial_temperature: the temperature of the first step, > 0.
        final_temperature: the temperature from step `decay_steps` on, > 0.

    Example:

    ```python
    model = vqkeras.models.VQVAE(encoder, decoder, GumbelQuantizer(512, 64))
    model.compile(optimizer="adam")
    model.fit(images, epochs=10, callbacks=[GumbelTemperatureSchedule(decay_steps=5000)])
    ```

    Reference:
        Ramesh et al., "Zero-Shot Text-to-Image Generation", 2021, appendix
        A.2; Jang et al., "Categorical Reparameterization with
        Gumbel-Softmax", 2017, section 4 (exponential annealing).
    """

    def __init__(self, decay_steps, initial_temperature=1.0, final_temperature=1.0 / 16):
        super().__init__()
        positive = dict(low=0.0, high=float("inf"), low_inclusive=False, high_inclusive=False)
        self.decay_steps = validation.positive_int("decay_steps", decay_steps)
        self.initial_temperature = validation.float_in_range(
            "initial_temperature", initial_temperature, **positive
        )
        self.final_temperature = validation.float_in_range(
            "final_temperature", final_temperature, **positive
        )

    def temperature(self, step):
        """The temperature of training step `step` (counted from 0)."""
        fraction = min(step, self.decay_steps) / self.decay_steps
        return (
            self.initial_temperature
            * (self.final_temperature / self.initial_temperature) ** fraction
        )

    def _quantizers(self):
        return [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, GumbelQuantizer)
        ]

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                "GumbelTemperatureSchedule counts the training steps with the model's optimizer, "
                f"and model '{self.model.name}' has none: compile it before training."
            )
        return optimizer

    def on_train_begin(self, logs=None):
        if not self._quantizers():
            raise ValueError(
                "GumbelTemperatureSchedule anneals the temperature of GumbelQuantizer layers, "
                f"and model '{self.model.name}' has none."
            )
        self._step = None
        self._assigned = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            # Read once per fit and counted here after: the optimizer's
            # count carries over from earlier fits and restored checkpoints.
            self._step = int(keras.ops.convert_to_numpy(self._optimizer().iterations))
        self._begin = batch
        temperature = self.temperature(self._step)
        if temperature == self._assigned:
            return
        # Under JAX, `self.model` writes the state that `fit` keeps outside
        # the variables mid-epoch back into them (Keras's `Callback.model`
        # does), and the next step reads them again: it sees the new value.
        for quantizer in self._quantizers():
            if quantizer.built:
                quantizer.temperature.assign(temperature)
            else:
                # TensorFlow's `fit` builds a subclassed model in its first
                # step, so its quantizers have no variable yet: the one they
                # create starts at the temperature of that step.
                quantizer.initial_temperature = temperature
        self._assigned = temperature

    def on_train_batch_end(self, batch, logs=None):
        # One call may run several steps (`steps_per_execution`).
        self._step += batch - self._begin + 1


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time and training throughput in a JSON file.

    Training time runs from the start of an epoch to the end of its last
    training batch, so validation is not counted (the first epoch includes
    tracing). Entries are keyed by epoch and kept in `path` across
    interruptions; a redone epoch replaces its entry.
    """

    def __init__(self, path, num_train_images, resume):
        super().__init__()
        self.path = path
        self.num_train_images = num_train_images
        self.epochs = {}
        if resume and os.path.exists(path):
            with open(path) as f:
                self.epochs = json.load(f)["epochs"]

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        train_time = self._last_batch_end - self._start
        self.epochs[str(epoch + 1)] = {
            "train_time_s": train_time,
            "epoch_time_s": time.perf_counter() - self._start,
            "train_images": self.num_train_images,
            "images_per_second": self.num_train_images / train_time,
        }
        write_json_atomic(self.path, {"epochs": self.epochs}, overwrite=True)

    def summary(self):
        """Total times and the median throughput over the recorded epochs."""
        entries = list(self.epochs.values())
        if not entries:
            return {}
        rates = [e["images_per_second"] for e in entries]
        return {
            "epochs": len(entries),
            "training_time_s": sum(e["epoch_time_s"] for e in entries),
            "training_time_without_validation_s": sum(e["train_time_s"] for e in entries),
            "images_per_second": statistics.median(rates),
            "images_per_second_per_epoch": rates,
        }


class TimeLimit(keras.callbacks.Callback):
    """Stops training after the epoch that passes `minutes` of training time
    in this session (None: no limit)."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = None if minutes is None else 60.0 * minutes

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is not None and time.perf_counter() - self._start > self.seconds:
            self.model.stop_training = True
