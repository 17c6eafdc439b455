"""Recipe: an EMA VQ-VAE on MNIST (a 7x7 grid of codes, K=128 codes of size D=16).

Trains `vqkeras.models.VQVAE` with an `EMAVectorQuantizer` on the MNIST training
images, holding out the last 5000 of them for validation, then measures the
model on the 10000 test images and writes everything to `--out`: the files of
`vqkeras.training.fit_resumable` (training_log.csv, timing.json, checkpoints/,
backup/), `metrics.json` (test-split metrics, training time and throughput)
and `preset/`, the trained model as a preset: what zoo/vqvae_mnist/ ships.

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
SSIM, codebook usage and perplexity over the split). `images_per_second` is the
median over epochs of training images divided by the epoch's training time
(validation excluded; the first epoch includes tracing).
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

IMAGE_SHAPE = (28, 28, 1)
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
    model.build((None, *IMAGE_SHAPE))
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, decay_steps=total_steps, alpha=FINAL_LEARNING_RATE_FRACTION
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


def preset_metadata(model, metrics):
    """What the model card and `vqkeras.zoo.info` report about this training."""
    return {
        "sample_check": sample_check(model, "mnist"),
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
    keras.utils.set_random_seed(args.seed)
    data = load_npz_splits(args.data, IMAGE_SHAPE, VALIDATION_SIZE, args.limit_train)
    x_train = data["x_train"]
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    model = build_model(args.seed, total_steps=args.epochs * steps_per_epoch)
    print(
        f"backend={keras.config.backend()} train={len(x_train)} val={len(data['x_val'])} "
        f"test={len(data['x_test'])} params={model.count_params()}",
        flush=True,
    )
    start = time.perf_counter()
    _, timer = fit_resumable(
        model,
        x_train,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(data["x_val"],),
    )
    fit_time = time.perf_counter() - start

    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_images": len(x_train),
        "validation_images": len(data["x_val"]),
        "num_embeddings": NUM_EMBEDDINGS,
        "embedding_dim": EMBEDDING_DIM,
        "channels": list(CHANNELS),
        "num_residual_blocks": NUM_RESIDUAL_BLOCKS,
        "parameters": model.count_params(),
        "fit_time_this_session_s": fit_time,
        **timer.summary(),
        "test": evaluate_reconstructions(model, data["x_test"], batch_size=EVAL_BATCH_SIZE),
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
