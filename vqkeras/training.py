"""Training runs: what the zoo recipes, `vqkeras train` and the benchmarks share.

`compile_with_cosine_adam(model, decay_steps)` compiles with Adam and a
cosine learning-rate decay, the optimizer of every recipe.

`fit_resumable(model, x, out_dir, ...)` wraps `model.fit` so that a run can be
interrupted and continued by running the same command again. It writes to
`out_dir`:

    training_log.csv     per-epoch metrics (`keras.callbacks.CSVLogger`)
    timing.json          per-epoch wall time and training throughput
    checkpoints/         one weights file per epoch (`epoch_NNN.weights.h5`)
    backup/              `keras.callbacks.BackupAndRestore` state, kept at the
                         end so that rerunning a finished run trains no further

Training restarts from the last completed epoch: weights, EMA codebook state
and optimizer state (including a learning-rate schedule's step).

`train_and_evaluate(build, x, out_dir, ...)` is the whole run: it builds the
model, compiles it with `compile_with_cosine_adam`, fits it with
`fit_resumable`, evaluates it and, given a `report`, writes

    metrics.json         the report's metrics
    preset/              the trained model, `vqkeras.from_preset(out_dir/preset)`
"""

import contextlib
import dataclasses
import json
import math
import os
import statistics
import time

import keras
import numpy as np

from vqkeras import distribution, validation
from vqkeras.augmentation import augmented_batches
from vqkeras.file_io import write_json_atomic

PRESET_DIR = "preset"
METRICS_FILE = "metrics.json"


def load_npz_splits(path, image_shape, validation_size, limit_train=None):
    """Reads an .npz in the layout of `keras.datasets.*.load_data()`.

    Args:
        path: the .npz file (`x_train`, `y_train`, `x_test`, `y_test`).
        image_shape: expected `(height, width, channels)`; grayscale arrays of
            rank 3 get a channel axis.
        validation_size: the last this many training images are held out.
        limit_train: keep only the first this many training images.

    Returns:
        A dict of uint8 NHWC images and int32 labels: `x_train`, `y_train`,
        `x_val`, `y_val`, `x_test`, `y_test`.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path}: expected the keras.datasets layout (x_train, y_train, x_test, "
                f"y_test). Missing: {sorted(missing)}."
            )
        arrays = {name: data[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    for name in ("x_train", "x_test"):
        x = arrays[name]
        if x.ndim == 3 and image_shape[-1] == 1:
            x = arrays[name] = x[..., None]
        if x.dtype != np.uint8 or x.shape[1:] != tuple(image_shape):
            raise ValueError(
                f"{path}: expected {name} as uint8 of shape (N, {', '.join(map(str, image_shape))})."
                f" Received dtype={x.dtype}, shape={x.shape}."
            )
    for name in ("y_train", "y_test"):
        arrays[name] = arrays[name].reshape(-1).astype("int32")
    if len(arrays["x_train"]) <= validation_size:
        raise ValueError(f"{path}: x_train needs more than {validation_size} images.")
    split = len(arrays["x_train"]) - validation_size
    end = split if limit_train is None else min(split, limit_train)
    return {
        "x_train": arrays["x_train"][:end],
        "y_train": arrays["y_train"][:end],
        "x_val": arrays["x_train"][split:],
        "y_val": arrays["y_train"][split:],
        "x_test": arrays["x_test"],
        "y_test": arrays["y_test"],
    }


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


def completed_epochs(out_dir):
    """How many epochs `training_log.csv` in `out_dir` records (0 without one)."""
    path = os.path.join(out_dir, "training_log.csv")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)  # minus the header


def is_resuming(out_dir):
    """Whether `out_dir` holds the backup of an earlier run of `fit_resumable`."""
    return os.path.exists(os.path.join(out_dir, "backup", "training_metadata.json"))


def cosine_adam(decay_steps, *, learning_rate=1e-3, final_fraction=0.1, betas=(0.9, 0.999)):
    """Adam whose learning rate falls along a half cosine from `learning_rate`
    to `learning_rate * final_fraction` over `decay_steps` optimizer steps,
    where it stays (`keras.optimizers.schedules.CosineDecay` with
    `alpha=final_fraction`). `betas` are Adam's `(beta_1, beta_2)`: GANs
    train with (0.5, 0.9), as taming-transformers' VQGAN."""
    decay_steps = validation.positive_int("decay_steps", decay_steps)
    learning_rate = validation.float_in_range(
        "learning_rate", learning_rate, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
    )
    final_fraction = validation.float_in_range("final_fraction", final_fraction, 0.0, 1.0)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"`betas` must be a pair (beta_1, beta_2). Received: betas={betas!r}.")
    beta_1, beta_2 = (
        validation.float_in_range(name, beta, 0.0, 1.0, high_inclusive=False)
        for name, beta in zip(("beta_1", "beta_2"), betas)
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=decay_steps, alpha=final_fraction
    )
    return keras.optimizers.Adam(schedule, beta_1=beta_1, beta_2=beta_2)


def compile_with_cosine_adam(
    model,
    decay_steps,
    *,
    learning_rate=1e-3,
    final_fraction=0.1,
    betas=(0.9, 0.999),
    discriminator_learning_rate=None,
    **compile_kwargs,
):
    """Compiles `model` with Adam and a cosine learning-rate decay (`cosine_adam`).

    The learning rate starts at `learning_rate` and falls along a half cosine
    to `learning_rate * final_fraction` after `decay_steps` optimizer steps,
    where it stays. The schedule reads the optimizer's step, so a run
    resumed by `fit_resumable` continues it.

    Args:
        model: a vqkeras model, which brings its own losses (or any Keras
            model, given `compile_kwargs`).
        decay_steps: length of the decay in optimizer steps, e.g.
            `epochs * math.ceil(len(x_train) / batch_size)`.
        learning_rate: the initial learning rate.
        final_fraction: the final learning rate, as a fraction of the initial one.
        betas: Adam's `(beta_1, beta_2)`, for every optimizer.
        discriminator_learning_rate: for a model trained against a
            discriminator (`VQGAN`, `AdversarialKLVAE`): the initial learning
            rate of the discriminator's own Adam, with the same decay. None:
            the discriminator's optimizer is a copy of the autoencoder's.
        **compile_kwargs: more arguments of `compile`, for a model that
            brings no losses of its own (a classifier's `loss`, `metrics`).

    Example:

    ```python
    steps = 10 * math.ceil(len(x_train) / 128)
    compile_with_cosine_adam(model, steps)  # 1e-3 down to 1e-4 over 10 epochs
    model.fit(x_train, epochs=10, batch_size=128)
    ```
    """
    shared = {"decay_steps": decay_steps, "final_fraction": final_fraction, "betas": betas}
    if discriminator_learning_rate is not None:
        groups = [group.name for group in getattr(model, "optimizer_groups", ())]
        if "discriminator" not in groups:
            raise ValueError(
                "`discriminator_learning_rate` applies to a model trained against a "
                f"discriminator (VQGAN, AdversarialKLVAE). Received a {type(model).__name__} "
                f"whose optimizer groups are {groups or 'none'}."
            )
        compile_kwargs["discriminator_optimizer"] = cosine_adam(
            learning_rate=discriminator_learning_rate, **shared
        )
    model.compile(optimizer=cosine_adam(learning_rate=learning_rate, **shared), **compile_kwargs)


def fit_resumable(
    model,
    x,
    out_dir,
    *,
    epochs,
    batch_size,
    y=None,
    validation_data=None,
    time_limit_minutes=None,
    callbacks=(),
    verbose=2,
    augmentation=None,
    seed=None,
):
    """`model.fit` with logs, per-epoch checkpoints and resumption (see the
    module docstring).

    The model must be built and compiled first, so that the backup has
    variables to restore into. With `augmentation` layers (e.g.
    `vqkeras.augmentation.augmentation_layers(["flip", "shift"])`), the
    images `x` (with their targets `y`, if any: a classifier's labels) are
    shuffled (seeded by `seed`), batched and augmented in a tf.data pipeline
    (`vqkeras.augmentation.augmented_batches`).

    Returns:
        `(history, timer)`: the `History` of this session and the
        `EpochTimer`, whose `summary()` covers every epoch of the run.
    """
    if not (model.built and model.compiled):
        raise ValueError(
            f"fit_resumable needs a built and compiled model; received {model.name!r} with "
            f"built={model.built}, compiled={model.compiled}."
        )
    timer_images = len(x)
    if augmentation is not None:
        x = augmented_batches(x, batch_size, augmentation, seed=seed, labels=y)
        y = batch_size = None
    resume = is_resuming(out_dir)
    checkpoint_dir = os.path.join(out_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    timer = EpochTimer(os.path.join(out_dir, "timing.json"), timer_images, resume)
    all_callbacks = [
        timer,
        keras.callbacks.CSVLogger(os.path.join(out_dir, "training_log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, "epoch_{epoch:03d}.weights.h5"), save_weights_only=True
        ),
        TimeLimit(time_limit_minutes),
        *callbacks,
        # Last, so that a backup exists only for epochs already logged.
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup"), delete_checkpoint=False),
    ]
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=augmentation is None,  # the augmentation pipeline shuffles
    )
    return history, timer


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What `train_and_evaluate` returns.

    Attributes:
        model: the trained model.
        history: the `History` of this session's `fit` (a resumed run's
            earlier epochs are in `training_log.csv`).
        timer: the `EpochTimer`, whose `summary()` covers every epoch of the run.
        fit_time_s: wall time of this session's `fit`.
        evaluation: what `evaluate(model)` returned.
        evaluation_time_s: wall time of `evaluate`.
        metrics: what the report wrote to `metrics.json`; None without a report.
    """

    model: keras.Model
    history: keras.callbacks.History
    timer: EpochTimer
    fit_time_s: float
    evaluation: dict
    evaluation_time_s: float
    metrics: dict | None = None


def train_and_evaluate(
    build,
    x,
    out_dir,
    *,
    epochs,
    batch_size,
    seed,
    evaluate,
    report=None,
    schedule_epochs=None,
    learning_rate=1e-3,
    final_fraction=0.1,
    betas=(0.9, 0.999),
    discriminator_learning_rate=None,
    validation_data=None,
    time_limit_minutes=None,
    distribute=False,
    callbacks=(),
    verbose=2,
    augmentation=None,
):
    """Builds, compiles, fits resumably and evaluates an autoencoder; given a
    `report`, saves its metrics and the model as a preset.

    In order:

    1. With a `report`: refuses (`FileExistsError`) an `out_dir/preset/` that
       no earlier session of this run wrote, before any training.
    2. `keras.utils.set_random_seed(seed)`, then `model = build()`.
    3. `compile_with_cosine_adam`, the decay lasting `schedule_epochs` epochs
       of `len(x)` examples in batches of `batch_size`.
    4. `fit_resumable` up to `epochs`: rerunning the same call resumes an
       interrupted run, and only re-evaluates a finished one.
    5. `evaluate(model)`.
    6. With a `report`: `metrics, metadata = report(run)`, given the
       `TrainingRun`; writes `metrics` to `out_dir/metrics.json`, then the
       model with `metadata` to `out_dir/preset/`, each atomically (a rerun
       replaces those of its earlier sessions).

    Args:
        build: makes the model, built and uncompiled: `build() -> keras.Model`.
        x: the training images (an autoencoder's inputs are its targets).
        out_dir: the run's folder (created if needed).
        epochs: epochs to train, all sessions of the run together.
        batch_size: images per batch (with `distribute`, the global batch).
        seed: seeds the weights' initialization and training.
        evaluate: measures the trained model: `evaluate(model) -> dict`.
        report: `report(run) -> (metrics, metadata)`: what to write to
            `metrics.json` and to the preset's metadata. None: nothing is
            written after training (the caller saves the model its own way).
        schedule_epochs: length of the learning-rate schedule in epochs
            (default: `epochs`), to reproduce a run that stopped early.
        learning_rate: initial learning rate of `compile_with_cosine_adam`.
        final_fraction: the final learning rate, as a fraction of the initial one.
        betas: Adam's `(beta_1, beta_2)`.
        discriminator_learning_rate: the initial learning rate of the
            discriminator's optimizer of an adversarial model (None: a copy
            of the autoencoder's; see `compile_with_cosine_adam`).
        validation_data: evaluated after each epoch, as in `fit`.
        time_limit_minutes: stop after the epoch that passes this much
            training time in this session (None: no limit).
        distribute: build, compile and fit in `vqkeras.distribution.data_parallel()`,
            data-parallel over all local devices. Evaluation runs outside it,
            so that its batches need not split evenly over the devices.
        callbacks: more callbacks for `fit`.
        verbose: verbosity of `fit`.
        augmentation: random preprocessing layers applied to the training
            images in the input pipeline (see `fit_resumable`); None: none.

    Returns:
        The `TrainingRun`.
    """
    preset = os.path.join(out_dir, PRESET_DIR)
    if report is not None and os.path.exists(preset) and not is_resuming(out_dir):
        raise FileExistsError(
            f"{preset} exists and no earlier run in {out_dir} wrote it: choose a new folder "
            "rather than overwrite that preset."
        )
    schedule_epochs = epochs if schedule_epochs is None else schedule_epochs
    with distribution.data_parallel() if distribute else contextlib.nullcontext():
        keras.utils.set_random_seed(seed)
        model = build()
        compile_with_cosine_adam(
            model,
            schedule_epochs * math.ceil(len(x) / batch_size),
            learning_rate=learning_rate,
            final_fraction=final_fraction,
            betas=betas,
            discriminator_learning_rate=discriminator_learning_rate,
        )
        start = time.perf_counter()
        history, timer = fit_resumable(
            model,
            x,
            out_dir,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=validation_data,
            time_limit_minutes=time_limit_minutes,
            callbacks=callbacks,
            verbose=verbose,
            augmentation=augmentation,
            seed=seed,
        )
        fit_time = time.perf_counter() - start
    start = time.perf_counter()
    evaluation = evaluate(model)
    run = TrainingRun(model, history, timer, fit_time, evaluation, time.perf_counter() - start)
    if report is None:
        return run
    metrics, metadata = report(run)
    write_json_atomic(os.path.join(out_dir, METRICS_FILE), metrics, overwrite=True)
    model.save_to_preset(preset, metadata=metadata, overwrite=True)
    return dataclasses.replace(run, metrics=metrics)


def sample_check(model, sample_name):
    """The PSNR of `model` on a sample shipped in `vqkeras.samples`, and the
    floor (0.5 dB below, rounded down) that the test suite holds the preset to."""
    from vqkeras import samples
    from vqkeras.evaluation import evaluate_reconstructions

    images, _ = samples.load(sample_name)
    psnr = evaluate_reconstructions(model, images)["psnr_db"]
    return {
        "sample": sample_name,
        "psnr_db": round(psnr, 2),
        "psnr_floor_db": math.floor(psnr - 0.5),
    }


def classifier_sample_check(model, sample_name):
    """The accuracy of a classifier preset's `model` (images on [0, 1]) on a
    sample shipped in `vqkeras.samples`, and the floor (0.01 below) that the
    test suite holds the preset to."""
    from vqkeras import samples

    images, labels = samples.load(sample_name)
    scores = model.predict(images / 255.0, verbose=0)
    accuracy = float(np.mean(np.argmax(scores, axis=-1) == labels))
    return {"sample": sample_name, "accuracy": accuracy, "accuracy_floor": accuracy - 0.01}
