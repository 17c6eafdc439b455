"""The quantizers side by side on CIFAR-10: an EMA codebook, FSQ, LFQ and Gumbel.

What it measures
----------------
Four VQ-VAEs of the families of `vqkeras.families`, built by
`vqkeras.models.factory.build_autoencoder` with the encoder and decoder of the
`vqvae_cifar10` zoo recipe (`ConvEncoder(channels=(64,
128), num_residual_blocks=1, residual_channels=64)`, 32x32 -> an 8x8 grid, the
mirrored `ConvDecoder`), differing only in the quantizer, each with about 2^10
codes per position:

- ema-vqvae: `EMAVectorQuantizer(1024, 64)` (the recipe's, with K = 1024: dead-code
  restarts, a codebook seeded from the first batch);
- fsq-vae: `FiniteScalarQuantizer((8, 5, 5, 5))`, 1000 codes, on a 4-channel latent
  (no projections);
- lfq-vae: `LookupFreeQuantizer(10)`, 1024 codes, on a 10-channel latent, with
  MAGVIT-v2's entropy loss (weight 0.1);
- gumbel-vae: a straight-through `GumbelQuantizer(1024, 64)`, its temperature annealed
  from 1 to 1/16 over the whole run (the family's `GumbelTemperatureSchedule`), as
  `vqkeras train` does.

Each trains as the recipe does (`vqkeras.training.train_and_evaluate`: the training
split minus its last 5000 images, Adam 1e-3 with a cosine decay to the family's
`final_learning_rate_fraction`, a tenth, the family's callbacks,
`--epochs`, `--batch-size`, the seed set before each model is built) and is measured
on the test split by `vqkeras.evaluation.evaluate_reconstructions`: PSNR (dB, mean
over images), SSIM, codebook usage (share of the codes used), perplexity, and bits per
image (8 x 8 x log2 K, the codes stored as they are). Seconds per epoch are the median
over epochs of the epoch's training time (validation excluded; the first epoch
includes tracing, so with one epoch it is the first's).

How to run
----------
    KERAS_BACKEND=tensorflow python benchmarks/quantizers_compared.py \\
        --data cifar10.npz --epochs 20 --image quantizers_cifar10.png
    python benchmarks/quantizers_compared.py --data cifar10.npz --epochs 1 \\
        --limit-train 256 --limit-test 256 --quantizers ema-vqvae,fsq-vae  # a smoke run

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`.
The backend is Keras's, from `KERAS_BACKEND`. The table goes to stdout. `--image
PATH` writes the first 8 test images over each model's reconstructions, one row per
model in the table's order (atomically; an existing file only with `--overwrite`).
`--out DIR` keeps each model's run folder (checkpoints, `training_log.csv`,
`timing.json`) under `DIR/<quantizer>`, and the same command resumes an interrupted
run there; without it they go to a temporary folder that is removed.
"""

import argparse
import os
import pathlib
import sys
import tempfile

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[1] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras

from vqkeras.apps.images import image_grid, to_uint8, write_png
from vqkeras.evaluation import EVALUATION_BATCH_SIZE, evaluate_reconstructions
from vqkeras.families import get_family
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import load_npz_splits, train_and_evaluate
from vqkeras.zoo.autoencoder_recipe import VALIDATION_SIZE
from vqkeras.zoo.vqvae_cifar10.recipe import RECIPE

# Each quantizer's family and its options (`FAMILIES[name].Options`): about
# 2^10 codes each, on a latent as wide as the quantizer takes.
QUANTIZERS = {
    "ema-vqvae": {"num_embeddings": 1024, "latent_dim": RECIPE.options["latent_dim"]},
    "fsq-vae": {"levels": (8, 5, 5, 5), "latent_dim": 4},
    "lfq-vae": {"num_embeddings": 1024, "latent_dim": 10},
    "gumbel-vae": {"num_embeddings": 1024, "latent_dim": RECIPE.options["latent_dim"]},
}
FIGURE_IMAGES = 8


def quantizer_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUANTIZERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {', '.join(QUANTIZERS)}. Received: {text!r}"
        )
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help=".npz in the keras.datasets layout")
    parser.add_argument("--epochs", type=int, default=20, help="(default: 20)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument(
        "--limit-train", type=int, metavar="N", help="train on the first N training images"
    )
    parser.add_argument(
        "--limit-test", type=int, metavar="N", help="measure on the first N test images"
    )
    parser.add_argument(
        "--quantizers",
        type=quantizer_list,
        default=list(QUANTIZERS),
        metavar="NAMES",
        help=f"a comma-separated subset of {','.join(QUANTIZERS)} (default: all)",
    )
    parser.add_argument("--image", metavar="PATH", help="write the reconstructions PNG here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --image")
    parser.add_argument("--out", metavar="DIR", help="keep the run folders here (resumable)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be a positive integer. Received: {value}"
            )
    # Refused before hours of training, not after.
    if args.image and os.path.exists(args.image) and not args.overwrite:
        parser.error(f"--image {args.image} exists; pass --overwrite to replace it.")
    return args


def build(name, options, seed):
    """The model of family `name` with its `options`, on the recipe's architecture."""
    return build_autoencoder(
        name,
        RECIPE.image_shape,
        architecture=RECIPE.architecture,
        seed=seed,
        **options.as_dict(),
        **RECIPE.architecture_options,
    )


def train(name, args, data, folder):
    """Trains and measures one quantizer's model: (model, table row)."""
    x_train, x_test = data["x_train"], data["x_test"]
    family = get_family(name, kind="autoencoder")
    # Gumbel's temperature anneals over the whole run.
    options = family.resolve(family.options(QUANTIZERS[name]), epochs=args.epochs)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    run = train_and_evaluate(
        lambda: build(name, options, args.seed),
        x_train,
        folder,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=lambda model: evaluate_reconstructions(model, x_test, EVALUATION_BATCH_SIZE),
        learning_rate=RECIPE.learning_rate,
        final_fraction=family.final_learning_rate_fraction,
        betas=RECIPE.betas,
        group_learning_rates=family.group_learning_rates(options),
        callbacks=family.callbacks(options, steps_per_epoch=steps_per_epoch),
        verbose=2,
    )
    timing = run.timer.summary()
    metrics = run.evaluation
    row = {
        "quantizer": name,
        "codes": run.model.quantizer.num_embeddings,
        "psnr_db": metrics["psnr_db"],
        "ssim": metrics["ssim"],
        "codebook_usage": metrics["codebook_usage"],
        "perplexity": metrics["perplexity"],
        "bits_per_image": metrics["bits_per_image"],
        # The median epoch's training time: the images over the median rate.
        "seconds_per_epoch": len(x_train) / timing["images_per_second"],
    }
    return run.model, row


def table(rows):
    """The rows as a Markdown table, as benchmarks/README.md holds them."""
    lines = [
        "| quantizer | codes | PSNR (dB) | SSIM | usage | perplexity | bits/image | s/epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['quantizer']} | {r['codes']} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | "
            f"{r['codebook_usage']:.1%} | {r['perplexity']:.1f} | {r['bits_per_image']:.0f} | "
            f"{r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    data = load_npz_splits(args.data, RECIPE.image_shape, VALIDATION_SIZE, args.limit_train)
    if args.limit_test is not None:
        data["x_test"] = data["x_test"][: args.limit_test]
    print(
        f"backend={keras.config.backend()} train={len(data['x_train'])} "
        f"test={len(data['x_test'])} epochs={args.epochs} batch_size={args.batch_size}",
        flush=True,
    )
    shown = data["x_test"][:FIGURE_IMAGES]
    rows, figure_rows = [], [list(shown)]
    with tempfile.TemporaryDirectory(prefix="quantizers_compared_") as scratch:
        for family in args.quantizers:
            folder = os.path.join(args.out or scratch, family)
            model, row = train(family, args, data, folder)
            rows.append(row)
            figure_rows.append(list(to_uint8(model.predict(shown, verbose=0))))
            print(f"{family}: {row}", flush=True)
    print(table(rows))
    if args.image:
        write_png(args.image, image_grid(figure_rows, FIGURE_IMAGES), overwrite=args.overwrite)
        print(f"{args.image}: rows: test images, {', '.join(args.quantizers)}")


if __name__ == "__main__":
    main()
