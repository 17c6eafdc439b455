"""Recipe: a class-conditional Gated PixelCNN prior over the 7x7 codes of the MNIST VQ-VAE.

Encodes the MNIST images into 7x7 code grids with a trained VQ-VAE (the one of
`zoo/vqvae_mnist/recipe.py`), trains `vqkeras.models.PixelCNNPrior` on the
training grids with their digit labels (the last 5000 training images held out
for validation, as in the VQ-VAE recipe), then measures the prior on the 10000
test grids and writes everything to `--out`:

    codes.npz            the exported int32 code grids and labels of every split
    training_log.csv     per-epoch metrics (`keras.callbacks.CSVLogger`)
    checkpoints/         one weights file per epoch (`epoch_NNN.weights.h5`)
    backup/              `keras.callbacks.BackupAndRestore` state (kept at the end)
    model.weights.h5     final weights
    config.json          the prior's serialized config
    samples.npz          sampled code grids (10 per digit) and their decoded images
    samples.png          those images, one row per digit
    metrics.json         test-split NLL (nats/code) and bits/dim, timings

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/pixelcnn_vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --vqvae vqvae_mnist --out runs/pixelcnn_mnist \\
        --epochs 20

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`;
`--vqvae` the VQ-VAE preset: the shipped `vqvae_mnist` (default) or a preset
folder, e.g. the `preset/` written by `zoo/vqvae_mnist/recipe.py`.
`--time-limit-minutes` stops training after the epoch that passes that much
training time (the learning-rate schedule still assumes `--epochs`).

Resuming: run the same command again after an interruption; training restarts
from the last completed epoch. To start afresh, use a new `--out` directory.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
given the codes before them and the digit label; `bits_per_dim` the NLL of a
whole grid in bits divided by the 784 pixel values of an image.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np

import vqkeras
from vqkeras.file_io import write_json_atomic
from vqkeras.models.pixelcnn_prior import PixelCNNPrior

FILTERS = 64
NUM_BLOCKS = 4
KERNEL_SIZE = 5
EMBEDDING_DIM = 64
LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE_FRACTION = 0.05
VALIDATION_SIZE = 5000
EVAL_BATCH_SIZE = 500
IMAGE_SIZE = (28, 28, 1)
NUM_CLASSES = 10
SAMPLES_PER_CLASS = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (keras.datasets layout)")
    parser.add_argument(
        "--vqvae", default="vqvae_mnist", help="VQ-VAE preset: a shipped name or a folder"
    )
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.time_limit_minutes is not None and args.time_limit_minutes <= 0:
        parser.error("--time-limit-minutes must be positive")
    return args


def encode(vqvae, images):
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(
                vqvae.encode_indices(images[start : start + EVAL_BATCH_SIZE])
            )
            for start in range(0, len(images), EVAL_BATCH_SIZE)
        ]
    ).astype("int32")


def export_codes(data_path, vqvae, path):
    """Code grids and labels of the train / validation / test splits, cached in `path`."""
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as codes:
            return {name: codes[name] for name in codes.files}
    with np.load(data_path, allow_pickle=False) as data:
        x_train, y_train = data["x_train"][..., None], data["y_train"].astype("int32")
        x_test, y_test = data["x_test"][..., None], data["y_test"].astype("int32")
    codes = {
        "train_codes": encode(vqvae, x_train[:-VALIDATION_SIZE]),
        "train_labels": y_train[:-VALIDATION_SIZE],
        "val_codes": encode(vqvae, x_train[-VALIDATION_SIZE:]),
        "val_labels": y_train[-VALIDATION_SIZE:],
        "test_codes": encode(vqvae, x_test),
        "test_labels": y_test,
    }
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **codes)
    os.replace(tmp, path)
    return codes


class TimeLimit(keras.callbacks.Callback):
    """Stops training after the epoch that passes `minutes` of training time
    (counted in this session)."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = None if minutes is None else 60.0 * minutes

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is not None and time.perf_counter() - self._start > self.seconds:
            self.model.stop_training = True


def save_samples(prior, vqvae, out, seed):
    labels = np.repeat(np.arange(NUM_CLASSES), SAMPLES_PER_CLASS).astype("int32")
    start = time.perf_counter()
    codes = keras.ops.convert_to_numpy(prior.sample(len(labels), labels=labels, seed=seed))
    sampling_time = time.perf_counter() - start
    images = np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(codes)), 0.0, 1.0)
    np.savez(os.path.join(out, "samples.npz"), codes=codes, labels=labels, images=images)
    height, width = IMAGE_SIZE[:2]
    mosaic = images.reshape(NUM_CLASSES, SAMPLES_PER_CLASS, height, width)
    mosaic = mosaic.transpose(0, 2, 1, 3).reshape(NUM_CLASSES * height, SAMPLES_PER_CLASS * width)
    keras.utils.save_img(os.path.join(out, "samples.png"), mosaic[..., None], scale=True)
    return sampling_time


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    backup_dir = os.path.join(args.out, "backup")
    checkpoint_dir = os.path.join(args.out, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    resume = os.path.exists(os.path.join(backup_dir, "training_metadata.json"))

    keras.utils.set_random_seed(args.seed)
    vqvae = vqkeras.from_preset(args.vqvae)
    start = time.perf_counter()
    codes = export_codes(args.data, vqvae, os.path.join(args.out, "codes.npz"))
    export_time = time.perf_counter() - start
    grid_shape = codes["train_codes"].shape[1:]

    prior = PixelCNNPrior(
        num_embeddings=vqvae.num_embeddings,
        grid_shape=grid_shape,
        num_classes=NUM_CLASSES,
        filters=FILTERS,
        num_blocks=NUM_BLOCKS,
        kernel_size=KERNEL_SIZE,
        embedding_dim=EMBEDDING_DIM,
        image_size=IMAGE_SIZE,
        name="pixelcnn_vqvae_mnist",
    )
    prior.build((None, *grid_shape))
    steps_per_epoch = math.ceil(len(codes["train_codes"]) / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE,
        decay_steps=args.epochs * steps_per_epoch,
        alpha=FINAL_LEARNING_RATE_FRACTION,
    )
    prior.compile(optimizer=keras.optimizers.Adam(schedule))
    print(
        f"backend={keras.config.backend()} grids train={len(codes['train_codes'])} "
        f"val={len(codes['val_codes'])} test={len(codes['test_codes'])} grid={grid_shape} "
        f"K={vqvae.num_embeddings} params={prior.count_params()} "
        f"{'resuming from ' + backup_dir if resume else 'starting afresh'}",
        flush=True,
    )

    callbacks = [
        keras.callbacks.CSVLogger(os.path.join(args.out, "training_log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, "epoch_{epoch:03d}.weights.h5"), save_weights_only=True
        ),
        TimeLimit(args.time_limit_minutes),
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
    ]
    start = time.perf_counter()
    history = prior.fit(
        codes["train_codes"],
        codes["train_labels"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(codes["val_codes"], codes["val_labels"]),
        callbacks=callbacks,
        verbose=2,
    )
    fit_time = time.perf_counter() - start

    prior.save_weights(os.path.join(args.out, "model.weights.h5"))
    write_json_atomic(
        os.path.join(args.out, "config.json"),
        keras.saving.serialize_keras_object(prior),
        overwrite=True,
    )
    test = prior.evaluate(
        codes["test_codes"],
        codes["test_labels"],
        batch_size=EVAL_BATCH_SIZE,
        verbose=0,
        return_dict=True,
    )
    sampling_time = save_samples(prior, vqvae, args.out, args.seed)
    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "vqvae": os.path.abspath(args.vqvae),
        "epochs_this_session": len(history.epoch),
        "epochs_planned": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_grids": len(codes["train_codes"]),
        "validation_grids": len(codes["val_codes"]),
        "test_grids": len(codes["test_codes"]),
        "grid_shape": list(grid_shape),
        "num_embeddings": vqvae.num_embeddings,
        "filters": FILTERS,
        "num_blocks": NUM_BLOCKS,
        "kernel_size": KERNEL_SIZE,
        "embedding_dim": EMBEDDING_DIM,
        "parameters": prior.count_params(),
        "code_export_time_s": export_time,
        "fit_time_this_session_s": fit_time,
        "final_validation": {
            name: values[-1] for name, values in history.history.items() if name.startswith("val_")
        },
        "test_nll_nats_per_code": test["nll"],
        "test_bits_per_dim": test["bits_per_dim"],
        "sampling_time_100_grids_s": sampling_time,
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
