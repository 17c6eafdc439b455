"""Recipe: a class-conditional Gated PixelCNN prior over the 7x7 codes of the MNIST VQ-VAE.

Encodes the MNIST images into 7x7 code grids with a trained VQ-VAE (the one of
`zoo/vqvae_mnist/recipe.py`), trains `vqkeras.models.PixelCNNPrior` on the
training grids with their digit labels (the last 5000 training images held out
for validation, as in the VQ-VAE recipe), then measures the prior on the 10000
test grids and writes everything to `--out`:

    codes.npz            the exported int32 code grids and labels of every split
    samples.npz          sampled code grids (10 per digit) and their decoded images
    samples.png          those images, one row per digit
    metrics.json         test-split NLL (nats/code) and bits/dim, the agreement
                         of a digit classifier with 1000 class-conditional
                         samples, timings
    preset/              the trained prior as a preset: what
                         zoo/pixelcnn_vqvae_mnist/ ships

plus the files of `vqkeras.training.fit_resumable` (training_log.csv,
timing.json, checkpoints/, backup/).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/pixelcnn_vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --vqvae vqvae_mnist --out runs/pixelcnn_mnist \\
        --epochs 6 --schedule-epochs 8

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`;
`--vqvae` the VQ-VAE preset: the shipped `vqvae_mnist` (default) or a preset
folder, e.g. the `preset/` written by `zoo/vqvae_mnist/recipe.py`;
`--classifier` the digit classifier preset (default: the shipped
`mnist_classifier`, from `zoo/mnist_classifier/recipe.py`).
`--schedule-epochs` sets the length of the cosine learning-rate schedule when
it differs from `--epochs` (the shipped prior: 6 epochs of an 8-epoch
schedule). `--time-limit-minutes` stops training after the epoch that passes
that much training time.

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
from vqkeras.evaluation import conditional_sample_agreement, encode_indices, evaluate_prior
from vqkeras.file_io import write_atomic, write_json_atomic
from vqkeras.models.pixelcnn_prior import PixelCNNPrior
from vqkeras.training import completed_epochs, fit_resumable

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
AGREEMENT_SAMPLES_PER_CLASS = 100


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (keras.datasets layout)")
    parser.add_argument(
        "--vqvae", default="vqvae_mnist", help="VQ-VAE preset: a shipped name or a folder"
    )
    parser.add_argument(
        "--classifier",
        default="mnist_classifier",
        help="digit classifier preset that judges the class-conditional samples",
    )
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--schedule-epochs",
        type=int,
        default=None,
        help="length of the cosine learning-rate schedule in epochs (default: --epochs)",
    )
    parser.add_argument("--time-limit-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    if args.schedule_epochs is None:
        args.schedule_epochs = args.epochs
    for name in ("epochs", "batch_size", "schedule_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.time_limit_minutes is not None and args.time_limit_minutes <= 0:
        parser.error("--time-limit-minutes must be positive")
    return args


def export_codes(data_path, vqvae, path):
    """Code grids and labels of the train / validation / test splits, cached in `path`."""
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as codes:
            return {name: codes[name] for name in codes.files}
    with np.load(data_path, allow_pickle=False) as data:
        x_train, y_train = data["x_train"][..., None], data["y_train"].astype("int32")
        x_test, y_test = data["x_test"][..., None], data["y_test"].astype("int32")
    codes = {
        "train_codes": encode_indices(vqvae, x_train[:-VALIDATION_SIZE]),
        "train_labels": y_train[:-VALIDATION_SIZE],
        "val_codes": encode_indices(vqvae, x_train[-VALIDATION_SIZE:]),
        "val_labels": y_train[-VALIDATION_SIZE:],
        "test_codes": encode_indices(vqvae, x_test),
        "test_labels": y_test,
    }
    write_atomic(path, lambda f: np.savez(f, **codes), mode="wb")
    return codes


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
        decay_steps=args.schedule_epochs * steps_per_epoch,
        alpha=FINAL_LEARNING_RATE_FRACTION,
    )
    prior.compile(optimizer=keras.optimizers.Adam(schedule))
    print(
        f"backend={keras.config.backend()} grids train={len(codes['train_codes'])} "
        f"val={len(codes['val_codes'])} test={len(codes['test_codes'])} grid={grid_shape} "
        f"K={vqvae.num_embeddings} params={prior.count_params()}",
        flush=True,
    )

    start = time.perf_counter()
    history, timer = fit_resumable(
        prior,
        codes["train_codes"],
        args.out,
        y=codes["train_labels"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(codes["val_codes"], codes["val_labels"]),
        time_limit_minutes=args.time_limit_minutes,
    )
    fit_time = time.perf_counter() - start

    test = evaluate_prior(
        prior, codes["test_codes"], codes["test_labels"], batch_size=EVAL_BATCH_SIZE
    )
    sampling_time = save_samples(prior, vqvae, args.out, args.seed)
    agreement = conditional_sample_agreement(
        prior,
        vqvae,
        vqkeras.from_preset(args.classifier),
        samples_per_class=AGREEMENT_SAMPLES_PER_CLASS,
        seed=args.seed,
    )
    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "vqvae": args.vqvae,
        "epochs_this_session": len(history.epoch),
        "epochs_planned": args.epochs,
        "schedule_epochs": args.schedule_epochs,
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
        "sampling_time_100_grids_s": sampling_time,
        "test": {**test, "conditional_sample_agreement": agreement},
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    sample_images, sample_labels = vqkeras.samples.load("mnist")
    sample_nll = evaluate_prior(prior, encode_indices(vqvae, sample_images), sample_labels)
    prior.save_to_preset(
        os.path.join(args.out, "preset"),
        metadata={
            "vqvae": args.vqvae,
            "classifier": args.classifier,
            # The test suite checks the shipped sample's codes stay this likely.
            "sample_check": {
                "sample": "mnist",
                "vqvae": args.vqvae,
                "nll_nats_per_code": round(sample_nll["nll_nats_per_code"], 4),
                "nll_ceiling_nats_per_code": round(sample_nll["nll_nats_per_code"] + 0.05, 2),
            },
            "dataset": f"MNIST code grids of {args.vqvae}, train split minus its last "
            "5000 images, with digit labels",
            "evaluation": "MNIST test split, all 10000 images (codes and labels), "
            "vqkeras.evaluation.evaluate_prior; 1000 class-conditional samples judged by "
            f"{args.classifier}",
            "recipe": "zoo/pixelcnn_vqvae_mnist/recipe.py",
            "training": {
                "backend": metrics["backend"],
                "epochs": completed_epochs(args.out),
                "schedule_epochs": args.schedule_epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                **timer.summary(),
            },
            "metrics": metrics["test"],
        },
        overwrite=True,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
