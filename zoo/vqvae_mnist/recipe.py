"""Recipe: an EMA VQ-VAE on MNIST (a 7x7 grid of codes, K=128 codes of size D=16).

Trains `vqkeras.models.VQVAE` with an `EMAVectorQuantizer` on the MNIST training
images, holding out the last 5000 of them for validation, then measures the
model on the 10000 test images and writes everything to `--out`:

    training_log.csv     per-epoch metrics (`keras.callbacks.CSVLogger`)
    timing.json          per-epoch wall time and training throughput
    checkpoints/         one weights file per epoch (`epoch_NNN.weights.h5`)
    backup/              `keras.callbacks.BackupAndRestore` state (kept at the end)
    metrics.json         test-split metrics, training time and throughput
    preset/              the trained model as a preset (config, weights, metadata
                         with the test metrics): what zoo/vqvae_mnist/ ships

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --out runs/vqvae_mnist --epochs 20

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`
(`x_train`, `y_train`, `x_test`, `y_test`; labels are not used).

Resuming: run the same command again after an interruption. Training restarts
from the last completed epoch (weights, EMA codebook and optimizer state,
including the learning-rate schedule's step); the CSV log and timing are
continued. Rerunning a finished run trains no further and only re-evaluates.
To start afresh, use a new `--out` directory.

Loading the result: `vqkeras.from_preset("runs/vqvae_mnist/preset")`.

Test metrics (`metrics.json`, key `test`) come from
`vqkeras.evaluation.evaluate_reconstructions` on all 10000 test images (see its
docstring: clipped reconstructions on the [0, 1] scale, mean per-image PSNR,
SSIM, codebook usage and perplexity over the split). `images_per_second` is the median over epochs of training images
divided by the epoch's training time (from the start of the epoch to its last
training batch: validation excluded; the first epoch includes tracing).
"""

import argparse
import json
import math
import os
import statistics
import time

import keras
import numpy as np

import vqkeras
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.file_io import write_json_atomic
from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer

NUM_EMBEDDINGS = 128
EMBEDDING_DIM = 16
CHANNELS = (32, 64)
NUM_RESIDUAL_BLOCKS = 1
LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE_FRACTION = 0.1
VALIDATION_SIZE = 5000
EVAL_BATCH_SIZE = 500


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (keras.datasets layout)")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training images only (for quick runs and timing)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def load_mnist(path, limit_train=None):
    """uint8 (N, 28, 28, 1) arrays: training, validation (the last 5000
    training images) and test images."""
    with np.load(path) as data:
        x_train, x_test = data["x_train"], data["x_test"]
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(
                f"{path}: expected {name} as uint8 of shape (N, 28, 28). "
                f"Received dtype={x.dtype}, shape={x.shape}."
            )
    if len(x_train) <= VALIDATION_SIZE:
        raise ValueError(f"{path}: x_train needs more than {VALIDATION_SIZE} images.")
    x_train, x_test = x_train[..., None], x_test[..., None]
    x_val = x_train[-VALIDATION_SIZE:]
    x_train = x_train[:-VALIDATION_SIZE]
    if limit_train is not None:
        x_train = x_train[:limit_train]
    return x_train, x_val, x_test


def build_model(seed, total_steps):
    """The VQ-VAE, built and compiled (Adam with a cosine learning-rate decay)."""
    model = vqkeras.models.VQVAE(
        encoder=ConvEncoder(
            latent_dim=EMBEDDING_DIM, channels=CHANNELS, num_residual_blocks=NUM_RESIDUAL_BLOCKS
        ),
        decoder=ConvDecoder(
            output_channels=1, channels=CHANNELS[::-1], num_residual_blocks=NUM_RESIDUAL_BLOCKS
        ),
        quantizer=EMAVectorQuantizer(
            NUM_EMBEDDINGS,
            EMBEDDING_DIM,
            decay=0.99,
            restart_after_steps=100,
            init_from_first_batch=True,
            seed=seed,
        ),
        name="vqvae_mnist",
    )
    # BackupAndRestore needs a built model to restore into.
    model.build((None, 28, 28, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, decay_steps=total_steps, alpha=FINAL_LEARNING_RATE_FRACTION
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time and training throughput in a JSON file.

    Training time is measured from the start of an epoch to the end of its last
    training batch, so validation is not counted. Entries are keyed by epoch
    and kept in `path` across interruptions (a redone epoch replaces its entry).
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
        entries = list(self.epochs.values())
        if not entries:
            return {}
        rates = [e["images_per_second"] for e in entries]
        return {
            "training_time_s": sum(e["epoch_time_s"] for e in entries),
            "training_time_without_validation_s": sum(e["train_time_s"] for e in entries),
            "images_per_second": statistics.median(rates),
            "images_per_second_per_epoch": rates,
        }


def preset_metadata(model, metrics):
    """What the model card and `vqkeras.zoo.info` report about this training."""
    images, _ = vqkeras.samples.load("mnist")
    sample_psnr = evaluate_reconstructions(model, images)["psnr_db"]
    return {
        # The test suite checks the shipped samples still reconstruct this well.
        "sample_check": {
            "sample": "mnist",
            "psnr_db": round(sample_psnr, 2),
            "psnr_floor_db": math.floor(sample_psnr - 0.5),
        },
        "dataset": "MNIST (keras.datasets layout), train split minus its last 5000 images",
        "evaluation": "MNIST test split, all 10000 images, vqkeras.evaluation",
        "recipe": "zoo/vqvae_mnist/recipe.py",
        "training": {
            key: metrics[key]
            for key in ("backend", "epochs", "batch_size", "seed", "training_time_s")
        },
        "metrics": metrics["test"],
    }


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    backup_dir = os.path.join(args.out, "backup")
    checkpoint_dir = os.path.join(args.out, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    resume = os.path.exists(os.path.join(backup_dir, "training_metadata.json"))

    keras.utils.set_random_seed(args.seed)
    x_train, x_val, x_test = load_mnist(args.data, args.limit_train)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    model = build_model(args.seed, total_steps=args.epochs * steps_per_epoch)
    print(
        f"backend={keras.config.backend()} train={len(x_train)} val={len(x_val)} "
        f"test={len(x_test)} params={model.count_params()} "
        f"{'resuming from ' + backup_dir if resume else 'starting afresh'}",
        flush=True,
    )

    timer = EpochTimer(os.path.join(args.out, "timing.json"), len(x_train), resume)
    callbacks = [
        timer,
        keras.callbacks.CSVLogger(os.path.join(args.out, "training_log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, "epoch_{epoch:03d}.weights.h5"), save_weights_only=True
        ),
        # Last, so that a backup exists only for epochs already logged. Kept at
        # the end of training, so a rerun of a finished run does not retrain.
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
    ]
    start = time.perf_counter()
    model.fit(
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_val,),
        callbacks=callbacks,
        verbose=2,
    )
    fit_time = time.perf_counter() - start

    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "epochs": len(timer.epochs),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_images": len(x_train),
        "validation_images": len(x_val),
        "num_embeddings": NUM_EMBEDDINGS,
        "embedding_dim": EMBEDDING_DIM,
        "channels": list(CHANNELS),
        "num_residual_blocks": NUM_RESIDUAL_BLOCKS,
        "parameters": model.count_params(),
        "fit_time_this_session_s": fit_time,
        **timer.summary(),
        "test": evaluate_reconstructions(model, x_test, batch_size=EVAL_BATCH_SIZE),
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    model.save_to_preset(
        os.path.join(args.out, "preset"),
        metadata=preset_metadata(model, metrics),
        overwrite=True,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
