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
import functools
import json
import math
import os
import time

import keras
import numpy as np

from vqkeras import distribution, validation
from vqkeras.augmentation import augmented_batches
from vqkeras.callbacks import EpochTimer, TimeLimit
from vqkeras.file_io import write_json_atomic
from vqkeras.presets import PRESET_DIR, from_preset, save_to_preset

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
    group_learning_rates=None,
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
        group_learning_rates: for a model of several optimizer groups
            (`model.optimizer_groups`, e.g. a VQGAN's generator and
            discriminator): `{group name: initial learning rate}` of the
            groups whose own Adam starts elsewhere than `learning_rate`, with
            the same decay. The others' optimizers are copies of the first's.
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
    groups = [group.name for group in getattr(model, "optimizer_groups", ())]
    for name, group_learning_rate in (group_learning_rates or {}).items():
        if name not in groups[1:]:
            raise ValueError(
                f"A learning rate was given for the optimizer group {name!r}, but "
                f"{type(model).__name__} {model.name!r} has "
                + (f"the groups {groups}, the first taking `learning_rate`." if groups else "none.")
            )
        compile_kwargs[f"{name}_optimizer"] = cosine_adam(
            learning_rate=group_learning_rate, **shared
        )
    model.compile(optimizer=cosine_adam(learning_rate=learning_rate, **shared), **compile_kwargs)


def load_initial_weights(model, preset):
    """Starts `model` from the weights of `preset` (a name or a folder): a
    warm start, or a fine-tune (a VQGAN from a VQ-VAE preset).

    The preset must hold a model of the same class and configuration (names,
    seeds and a KL-VAE's latent scaling and shift factors aside), or of those of
    `model.as_inference_model()` (the adversarial families: their encoder,
    quantizer and decoder are then set, the discriminator keeps its
    initialization).

    Raises:
        ValueError: naming the preset's class or the configuration entries
            that differ.
    """
    source = from_preset(preset)
    target = model
    if type(source) is not type(model) and hasattr(model, "as_inference_model"):
        target = model.as_inference_model()
    if type(source) is not type(target):
        raise ValueError(
            f"Cannot start {type(model).__name__} {model.name!r} from {preset!r}: the preset "
            f"holds a {type(source).__name__}, expected a {type(target).__name__}."
        )
    expected, received = _architecture(target), _architecture(source)
    differing = sorted(
        key for key in expected.keys() | received.keys() if expected.get(key) != received.get(key)
    )
    if differing:
        raise ValueError(
            f"Cannot start {type(model).__name__} {model.name!r} from {preset!r}: their "
            f"architectures differ in {differing}."
        )
    target.set_weights(source.get_weights())


def _architecture(model):
    """`model`'s config as JSON values (as a saved preset's), without the
    names of its layers, which a process numbers as it makes them, the seeds
    of its random draws, nor a KL-VAE's latent scaling and shift factors."""

    def without_names(value):
        if isinstance(value, dict):
            return {k: without_names(v) for k, v in value.items() if k not in ("name", "seed")}
        if isinstance(value, list):
            return [without_names(v) for v in value]
        return value

    config = without_names(json.loads(json.dumps(model.get_config())))
    config.pop("scaling_factor", None)
    config.pop("shift_factor", None)
    return config


def num_examples(x):
    """The number of examples of `x`: an array, or a tuple of arrays of one length."""
    return len(x[0]) if isinstance(x, (tuple, list)) else len(x)


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
    timer_images = num_examples(x)
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
        measured: what `after_training(model)` returned (empty without it).
        evaluation: what `evaluate(model)` returned.
        evaluation_time_s: wall time of `evaluate`.
        metrics: what the report wrote to `metrics.json`; None without a report.
    """

    model: keras.Model
    history: keras.callbacks.History
    timer: EpochTimer
    fit_time_s: float
    measured: dict
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
    y=None,
    report=None,
    init_from=None,
    after_training=None,
    schedule_epochs=None,
    learning_rate=1e-3,
    final_fraction=0.1,
    betas=(0.9, 0.999),
    group_learning_rates=None,
    compile_kwargs=None,
    validation_data=None,
    time_limit_minutes=None,
    distribute=False,
    callbacks=(),
    verbose=2,
    augmentation=None,
):
    """Builds, compiles, fits resumably and evaluates a model (an autoencoder,
    a prior over codes, a classifier); given a `report`, saves its metrics and
    the model as a preset. The one pipeline of `vqkeras train`, the zoo's
    recipes and the benchmarks.

    In order:

    1. With a `report`: refuses (`FileExistsError`) an `out_dir/preset/` that
       no earlier session of this run wrote, before any training.
    2. `keras.utils.set_random_seed(seed)`, then `model = build()`; with
       `init_from`, its weights from that preset (`load_initial_weights`).
    3. `compile_with_cosine_adam`, the decay lasting `schedule_epochs` epochs
       of the examples of `x` in batches of `batch_size`.
    4. `fit_resumable` up to `epochs`: rerunning the same call resumes an
       interrupted run (from its checkpoint, not from `init_from` again),
       and only re-evaluates a finished one.
    5. `after_training(model)`, then `evaluate(model)`.
    6. With a `report`: `metrics, metadata = report(run)`, given the
       `TrainingRun`; writes `metrics` to `out_dir/metrics.json`, then the
       model with `metadata` to `out_dir/preset/`, each atomically (a rerun
       replaces those of its earlier sessions).

    Args:
        build: makes the model, built and uncompiled: `build() -> keras.Model`.
        x: the training inputs: images (an autoencoder's inputs are its
            targets), code grids, or a tuple of arrays (a conditioned
            prior's grids and condition grids).
        out_dir: the run's folder (created if needed).
        epochs: epochs to train, all sessions of the run together.
        batch_size: examples per batch (with `distribute`, the global batch).
        seed: seeds the weights' initialization and training.
        evaluate: measures the trained model: `evaluate(model) -> dict`.
        y: the targets, if any: a class-conditional prior's labels, a
            classifier's classes.
        report: `report(run) -> (metrics, metadata)`: what to write to
            `metrics.json` and to the preset's metadata. None: nothing is
            written after training (the caller saves the model its own way).
        init_from: a preset (name or folder) whose weights start the
            training (see `load_initial_weights`); None: a fresh initialization.
        after_training: `after_training(model) -> dict`, run before the
            evaluation: what it measures and stores in the model before it is
            saved (a family's `after_training`, e.g. a KL-VAE's scaling factor).
        schedule_epochs: length of the learning-rate schedule in epochs
            (default: `epochs`), to reproduce a run that stopped early.
        learning_rate: initial learning rate of `compile_with_cosine_adam`.
        final_fraction: the final learning rate, as a fraction of the initial one.
        betas: Adam's `(beta_1, beta_2)`.
        group_learning_rates: initial learning rates of other optimizer
            groups, by group name (see `compile_with_cosine_adam`).
        compile_kwargs: more arguments of `compile` (a classifier's `loss`
            and `metrics`).
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
        if init_from is not None:
            load_initial_weights(model, init_from)
        compile_with_cosine_adam(
            model,
            schedule_epochs * math.ceil(num_examples(x) / batch_size),
            learning_rate=learning_rate,
            final_fraction=final_fraction,
            betas=betas,
            group_learning_rates=group_learning_rates,
            **(compile_kwargs or {}),
        )
        start = time.perf_counter()
        history, timer = fit_resumable(
            model,
            x,
            out_dir,
            y=y,
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
    measured = after_training(model) if after_training is not None else {}
    start = time.perf_counter()
    evaluation = evaluate(model)
    run = TrainingRun(
        model, history, timer, fit_time, measured, evaluation, time.perf_counter() - start
    )
    if report is None:
        return run
    metrics, metadata = report(run)
    write_json_atomic(os.path.join(out_dir, METRICS_FILE), metrics, overwrite=True)
    # vqkeras's models save what inference needs (an adversarial model, its
    # autoencoder); any other Keras model (a classifier) is saved whole.
    save = getattr(model, "save_to_preset", None) or functools.partial(save_to_preset, model)
    save(preset, metadata=metadata, overwrite=True)
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
    scores = model.predict(validation.to_unit_range(images), verbose=0)
    accuracy = float(np.mean(np.argmax(scores, axis=-1) == labels))
    return {"sample": sample_name, "accuracy": accuracy, "accuracy_floor": accuracy - 0.01}
