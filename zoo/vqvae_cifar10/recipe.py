"""Recipe: an EMA VQ-VAE on CIFAR-10 (an 8x8 grid of codes, K=512 codes of size D=64).

Trains `vqkeras.models.VQVAE` with an `EMAVectorQuantizer` on the CIFAR-10
training images, holding out the last 5000 of them for validation, then
measures the model on the 10000 test images and writes everything to `--out`:
the files of `vqkeras.training.fit_resumable` (training_log.csv, timing.json,
checkpoints/, backup/), `metrics.json` (test-split metrics, training time and
throughput) and `preset/`, the trained model as a preset: what
zoo/vqvae_cifar10/ ships.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/vqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/vqvae_cifar10 --epochs 20

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`
(labels are not used). The shipped preset was trained on a JPEG-derived copy of
CIFAR-10 (quality 75), not on the canonical pixels; its card says so.

Resuming: run the same command again after an interruption; training restarts
from the last completed epoch, and rerunning a finished run only re-evaluates.
`--time-limit-minutes` stops after the epoch that passes that much training
time (the learning-rate schedule still assumes `--epochs`).
"""

import argparse
import json
import math
import os
import time

import keras

import vqkeras
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.file_io import write_json_atomic
from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer
from vqkeras.training import fit_resumable, load_npz_splits, sample_check

IMAGE_SHAPE = (32, 32, 3)
NUM_EMBEDDINGS = 512
EMBEDDING_DIM = 64
CHANNELS = (64, 128)
NUM_RESIDUAL_BLOCKS = 1
RESIDUAL_CHANNELS = 64
LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE_FRACTION = 0.1
VALIDATION_SIZE = 5000
EVAL_BATCH_SIZE = 500


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 .npz (keras.datasets layout)")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit-minutes", type=float, default=None)
    parser.add_argument(
        "--limit-train", type=int, default=None, metavar="N", help="train on N images only"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def build_model(seed, total_steps):
    """The VQ-VAE, built and compiled (Adam with a cosine learning-rate decay)."""
    model = vqkeras.models.VQVAE(
        encoder=ConvEncoder(
            latent_dim=EMBEDDING_DIM,
            channels=CHANNELS,
            num_residual_blocks=NUM_RESIDUAL_BLOCKS,
            residual_channels=RESIDUAL_CHANNELS,
        ),
        decoder=ConvDecoder(
            output_channels=IMAGE_SHAPE[-1],
            channels=CHANNELS[::-1],
            num_residual_blocks=NUM_RESIDUAL_BLOCKS,
            residual_channels=RESIDUAL_CHANNELS,
        ),
        quantizer=EMAVectorQuantizer(
            NUM_EMBEDDINGS,
            EMBEDDING_DIM,
            decay=0.99,
            restart_after_steps=100,
            init_from_first_batch=True,
            seed=seed,
        ),
        name="vqvae_cifar10",
    )
    model.build((None, *IMAGE_SHAPE))
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, decay_steps=total_steps, alpha=FINAL_LEARNING_RATE_FRACTION
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    data = load_npz_splits(args.data, IMAGE_SHAPE, VALIDATION_SIZE, args.limit_train)
    steps_per_epoch = math.ceil(len(data["x_train"]) / args.batch_size)
    model = build_model(args.seed, total_steps=args.epochs * steps_per_epoch)
    print(
        f"backend={keras.config.backend()} train={len(data['x_train'])} "
        f"val={len(data['x_val'])} test={len(data['x_test'])} params={model.count_params()}",
        flush=True,
    )
    start = time.perf_counter()
    _, timer = fit_resumable(
        model,
        data["x_train"],
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(data["x_val"],),
        time_limit_minutes=args.time_limit_minutes,
    )
    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "epochs_planned": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_images": len(data["x_train"]),
        "validation_images": len(data["x_val"]),
        "parameters": model.count_params(),
        "fit_time_this_session_s": time.perf_counter() - start,
        **timer.summary(),
        "test": evaluate_reconstructions(model, data["x_test"], batch_size=EVAL_BATCH_SIZE),
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    model.save_to_preset(
        os.path.join(args.out, "preset"),
        metadata={
            "sample_check": sample_check(model, "cifar10"),
            "dataset": "CIFAR-10, JPEG-derived copy (quality 75), train split minus its "
            "last 5000 images",
            "evaluation": "CIFAR-10 JPEG-derived copy, test split, all 10000 images, "
            "vqkeras.evaluation",
            "recipe": "zoo/vqvae_cifar10/recipe.py",
            "training": {
                key: metrics[key]
                for key in ("backend", "epochs", "batch_size", "seed", "training_time_s")
            },
            "metrics": metrics["test"],
        },
        overwrite=True,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
