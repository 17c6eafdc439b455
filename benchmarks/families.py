"""The autoencoder families side by side on MNIST: AE, VAE, KL-VAE, VQ-VAE, RQ-VAE.

What it measures
----------------
Each family of the registry (`vqkeras.families`) is built by
`vqkeras.models.factory.build_autoencoder` with the architecture of the `vqvae_mnist`
zoo recipe (`ConvEncoder(channels=(48, 96), num_residual_blocks=2)`, 28x28 -> a 7x7
latent grid, and the mirrored `ConvDecoder` with sub-pixel upsampling), so all share
the same encoder and decoder; only the bottleneck differs:

- ae: `Autoencoder`, a deterministic 7x7xC float latent (C = 16);
- vae: `VAE(kl_weight=1)`, a 7x7xC diagonal-Gaussian posterior, KL to N(0, I) weighted as
  the ELBO with a Gaussian likelihood of variance 0.5 on the [0, 1] pixel scale;
- klvae: `KLVAE(kl_weight=1e-6)`, the same posterior with latent diffusion's tiny
  KL weight;
- vqvae: `VQVAE` with `EMAVectorQuantizer(128, 16)` (the factory's "ema-vqvae", as
  the zoo recipe: dead-code restarts, codebook seeded from the first batch);
- rqvae: `RQVAE` with `ResidualVectorQuantizer(EMAVectorQuantizer(128, 16), depth=4)`,
  one codebook of K=128 per level (`shared_codebook=False`).

C = 16 is the VQ code size D, so all five encoders end in the same kind of 7x7x16
projection (the VAEs' has twice the channels: means and log-variances). Every family
gets the same data (MNIST training split minus its last 5000 images, held out for
validation, as the recipe), epochs, batch size, optimizer (Adam 1e-3 with cosine decay
to the family's `final_learning_rate_fraction` of it, 1e-4, as
`zoo/autoencoder_recipe.py`) and seed (`keras.utils.set_random_seed(seed)` before each
family is built, so a family's result does not depend on which others ran before it):
each is trained and evaluated by `vqkeras.training.train_and_evaluate`, as the zoo
recipes are.

On all 10000 test images, per family: MSE, PSNR (dB, mean over images) and SSIM from
`vqkeras.evaluation.evaluate_reconstructions` (reconstructions clipped to [0, 1]; the
VAEs decode the posterior mean); training wall time (the sum of the epochs' wall times,
validation and the first epoch's tracing included) and throughput (median over epochs
of training images per second, validation excluded); parameter count (every weight,
the EMA codebook statistics included). What a latent costs, in bits per image:

- `code_bits`: discrete latents, h * w * log2(K) per level (RQ: times the depth), the
  size of the codes stored without entropy coding;
- `code_entropy_bits`: h * w * log2(perplexity) per level, the size under an ideal
  entropy coder for the codes' frequencies over the test split (codes taken as
  independent: a rough bound, a prior over the grid does better);
- `float32_bits`: continuous latents stored as they are, h * w * C * 32 (the VAEs
  store the posterior mean);
- `kl_bits` (VAE and KL-VAE): the mean over test images of KL(q(z|x) || N(0, I))
  divided by ln 2, the information-theoretic cost of sending a posterior sample under
  the prior (bits-back coding); it says how much the latent actually carries.

For RQ-VAE also the PSNR of each prefix of the code stack (the first k levels decoded,
k = 1..depth, at k * h * w * log2(K) bits), and each level's codebook usage and
perplexity (`evaluate_reconstructions` pools the levels' codes into one histogram).

How to run
----------
    KERAS_BACKEND=tensorflow python benchmarks/families.py \\
        --data mnist.npz --out runs/families --epochs 5
    python benchmarks/families.py --data mnist.npz --out /tmp/quick \\
        --epochs 1 --limit-train 2000 --families ae,vqvae      # a quick check

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`.
Outputs in `--out`:

    results.json            settings and, per family, the figures above, the
                            per-epoch fit log and timing (written atomically after
                            each family)
    families_mnist.png      the same 8 test images: originals on the first row, each
                            family's reconstructions below, labelled with the family
                            and its test PSNR (and each image's PSNR)
    <family>/               `vqkeras.training.fit_resumable`'s folder (training_log.csv,
                            timing.json, checkpoints/, backup/), plus model.keras (the
                            trained model) and reconstructions.npy (the figure's row)

Resuming: rerun the same command. Families already in `results.json` are skipped; an
interrupted family continues from its last completed epoch. A rerun with other
settings (backend, epochs, batch size, seed, training images) into the same `--out`
stops with an error: results trained differently would share one table.
Progress goes to stdout.
"""

import argparse
import csv
import datetime
import io
import json
import math
import os
import platform
import time

import keras
import numpy as np

import vqkeras
from vqkeras.evaluation import EVALUATION_BATCH_SIZE, evaluate_reconstructions, psnr_db
from vqkeras.families import get_family
from vqkeras.file_io import write_atomic, write_json_atomic
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import is_resuming, load_npz_splits, train_and_evaluate
from vqkeras.validation import to_unit_range
from vqkeras.zoo import autoencoder_recipe as recipe
from vqkeras.zoo.vqvae_mnist.recipe import RECIPE

FAMILIES = ("ae", "vae", "klvae", "vqvae", "rqvae")
LABELS = {
    "ae": "AE",
    "vae": "VAE (kl_weight=1)",
    "klvae": "KL-VAE (1e-6)",
    "vqvae": "VQ-VAE (K=128)",
    "rqvae": "RQ-VAE (4x128)",
}
# Registry names (`vqkeras.families`): the VQ-VAE is the EMA one, as in the zoo recipe.
FACTORY_FAMILIES = {
    "ae": "ae",
    "vae": "vae",
    "klvae": "klvae",
    "vqvae": "ema-vqvae",
    "rqvae": "rqvae",
}
# The continuous latents get as many channels as the VQ codes have dimensions.
LATENT_CHANNELS = RECIPE.options["latent_dim"]
NUM_EMBEDDINGS = RECIPE.options["num_embeddings"]
VAE_KL_WEIGHT = 1.0
KLVAE_KL_WEIGHT = 1e-6
RQ_DEPTH = 4
# Each family's options (`FAMILIES[name].Options`); the others take their defaults.
FAMILY_OPTIONS = {
    "ae": {"latent_dim": LATENT_CHANNELS},
    "vae": {"latent_dim": LATENT_CHANNELS, "kl_weight": VAE_KL_WEIGHT},
    "klvae": {"latent_dim": LATENT_CHANNELS, "kl_weight": KLVAE_KL_WEIGHT},
    "vqvae": RECIPE.options,
    "rqvae": {**RECIPE.options, "depth": RQ_DEPTH},
}
FLOAT_BITS = 32
IMAGE_SHAPE = RECIPE.image_shape
FIGURE_IMAGES = 8
# Settings that must match for results of one folder to share a table.
SETTINGS_KEYS = ("backend", "epochs", "batch_size", "seed", "train_images", "validation_images")


def log(message):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def cpu_name():
    """The CPU's model name where Linux tells it, else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (keras.datasets layout)")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training images only (for quick runs and timing)",
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated families to train, from {','.join(FAMILIES)} (default: all)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    names = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        parser.error(
            f"--families takes a comma-separated list from {','.join(FAMILIES)}, "
            f"got {args.families!r}"
        )
    # Table order, whatever order they were given in.
    args.families = [name for name in FAMILIES if name in names]
    return args


def build_family(family, seed):
    """The family's model, built and uncompiled: the zoo recipe's encoder and
    decoder around the family's bottleneck."""
    return build_autoencoder(
        FACTORY_FAMILIES[family],
        IMAGE_SHAPE,
        architecture=RECIPE.architecture,
        seed=seed,
        name=f"{family}_mnist",
        **FAMILY_OPTIONS[family],
        **RECIPE.architecture_options,
    )


def final_fraction(family):
    """The final learning rate of the family's cosine schedule, as a fraction of the first."""
    return get_family(FACTORY_FAMILIES[family]).final_learning_rate_fraction


def latent_description(family):
    """A sentence for the results: what the family's latent is."""
    c, k = LATENT_CHANNELS, NUM_EMBEDDINGS
    return {
        "ae": f"deterministic 7x7x{c} float latent",
        "vae": f"7x7x{c} diagonal-Gaussian posterior, prior N(0, I), kl_weight={VAE_KL_WEIGHT}",
        "klvae": f"7x7x{c} diagonal-Gaussian posterior, prior N(0, I), kl_weight={KLVAE_KL_WEIGHT}",
        "vqvae": f"7x7 grid of codes from one EMA codebook of K={k}, D={c}",
        "rqvae": f"7x7 grid of {RQ_DEPTH} residual codes, one EMA codebook of K={k} per level",
    }[family]


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def mse_and_psnr(target, reconstructions):
    """Mean MSE and mean per-image PSNR, as `evaluate_reconstructions` computes them."""
    mse = np.mean(np.square(np.clip(reconstructions, 0.0, 1.0) - target), axis=(1, 2, 3))
    return float(np.mean(mse)), float(np.mean(psnr_db(mse)))


def in_batches(function, images, batch_size):
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(function(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
    )


def code_statistics(codes, num_embeddings):
    """Usage (fraction of the K codes used) and perplexity of one level's codes."""
    counts = np.bincount(codes.ravel(), minlength=num_embeddings)
    probs = counts[counts > 0] / counts.sum()
    return float(np.mean(counts > 0)), float(np.exp(-np.sum(probs * np.log(probs))))


def latent_costs(family, model, x_test, evaluation, batch_size):
    """Bits per image of the family's latent (see the module docstring)."""
    height, width, channels = model.encoder.compute_output_shape((1, *IMAGE_SHAPE))[1:]
    positions = height * width
    if family in ("vqvae", "rqvae"):
        codes = in_batches(model.encode_indices, x_test, batch_size)
        # (N, h, w) for VQ, (N, h, w, depth) for RQ: one histogram per level.
        levels = codes[..., None] if codes.ndim == 3 else codes
        stats = [
            code_statistics(levels[..., i], model.num_embeddings) for i in range(levels.shape[-1])
        ]
        costs = {
            "latent_grid": [height, width],
            "code_bits": evaluation["bits_per_image"],
            "code_entropy_bits": positions * sum(math.log2(p) for _, p in stats),
            "level_codebook_usage": [usage for usage, _ in stats],
            "level_perplexity": [perplexity for _, perplexity in stats],
        }
        if family == "rqvae":
            target = to_unit_range(x_test)
            prefixes = []
            for depth in range(1, model.depth + 1):
                reconstructions = in_batches(model.decode_indices, codes[..., :depth], batch_size)
                mse, psnr = mse_and_psnr(target, reconstructions)
                prefixes.append(
                    {
                        "depth": depth,
                        "code_bits": depth * positions * math.log2(model.num_embeddings),
                        "mse": mse,
                        "psnr_db": psnr,
                    }
                )
            costs["prefixes"] = prefixes
        return costs
    latent_channels = channels // 2 if family in ("vae", "klvae") else channels
    costs = {
        "latent_grid": [height, width],
        "latent_channels": latent_channels,
        "float32_bits": positions * latent_channels * FLOAT_BITS,
    }
    if family in ("vae", "klvae"):
        kl_nats = in_batches(lambda batch: model.encode(batch).kl(), x_test, batch_size)
        costs["kl_nats"] = float(np.mean(kl_nats))
        costs["kl_bits"] = float(np.mean(kl_nats) / math.log(2.0))
    return costs


def read_training_log(path):
    """The per-epoch metrics of `fit_resumable`'s CSV log, as lists by name
    (every session of a resumed run, unlike `fit`'s History)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def train_family(family, args, data, folder):
    """Trains and measures one family; returns its results entry."""
    x_train, x_val, x_test = data
    keras.backend.clear_session()

    def build():
        model = build_family(family, args.seed)
        log(
            f"{family}: {latent_description(family)}; {model.count_params()} parameters "
            f"({trainable_parameters(model)} trainable)"
        )
        if is_resuming(folder):
            log(f"{family}: resuming its training from {folder}")
        return model

    run = train_and_evaluate(
        build,
        x_train,
        folder,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=lambda model: evaluate_reconstructions(
            model, x_test, batch_size=EVALUATION_BATCH_SIZE
        ),
        learning_rate=recipe.LEARNING_RATE,
        final_fraction=final_fraction(family),
        validation_data=(x_val,),
    )
    model, evaluation, timing = run.model, run.evaluation, run.timer.summary()
    log(
        f"{family}: trained in {timing['training_time_s']:.0f} s, "
        f"{timing['images_per_second']:.0f} images/s"
    )

    start = time.perf_counter()
    costs = latent_costs(family, model, x_test, evaluation, EVALUATION_BATCH_SIZE)
    reconstructions = np.clip(model.predict(x_test[:FIGURE_IMAGES], verbose=0), 0.0, 1.0)
    np.save(os.path.join(folder, "reconstructions.npy"), reconstructions.astype("float32"))
    model.save(os.path.join(folder, "model.keras"))
    evaluation_time = run.evaluation_time_s + time.perf_counter() - start
    log(
        f"{family}: test PSNR {evaluation['psnr_db']:.2f} dB, SSIM {evaluation['ssim']:.3f}, "
        f"MSE {evaluation['mse']:.5f} (evaluated in {evaluation_time:.0f} s)"
    )
    return {
        "label": LABELS[family],
        "model": type(model).__name__,
        "latent": latent_description(family),
        "parameters": model.count_params(),
        "trainable_parameters": trainable_parameters(model),
        "training_time_s": timing["training_time_s"],
        "images_per_second": timing["images_per_second"],
        "timing": timing,
        "history": read_training_log(os.path.join(folder, "training_log.csv")),
        "test": evaluation,
        "latent_cost_bits_per_image": costs,
    }


def write_figure(path, originals, rows):
    """Originals on the first row, then one row per family: `rows` is a list of
    (label, test PSNR, reconstructions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = to_unit_range(originals)
    count = len(originals)
    fig, axes = plt.subplots(
        len(rows) + 1, count, figsize=(1.0 * count + 1.6, 1.15 * (len(rows) + 1)), squeeze=False
    )
    all_rows = [("original", None, target), *rows]
    for r, (label, psnr, images) in enumerate(all_rows):
        for c in range(count):
            ax = axes[r, c]
            ax.imshow(images[c, ..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if psnr is not None:
                _, image_psnr = mse_and_psnr(target[c : c + 1], images[c : c + 1])
                ax.set_xlabel(f"{image_psnr:.1f} dB", fontsize=6, labelpad=1)
        title = label if psnr is None else f"{label}\n{psnr:.2f} dB (test)"
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, lambda f: f.write(buffer.getvalue()), overwrite=True, mode="wb")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    splits = load_npz_splits(args.data, IMAGE_SHAPE, recipe.VALIDATION_SIZE, args.limit_train)
    x_train, x_val, x_test = splits["x_train"], splits["x_val"], splits["x_test"]
    settings = {
        "backend": keras.config.backend(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_images": len(x_train),
        "validation_images": len(x_val),
        "test_images": len(x_test),
        "data": args.data,
        "optimizer": f"Adam {recipe.LEARNING_RATE} with cosine decay to "
        + ", ".join(
            sorted({f"{recipe.LEARNING_RATE * final_fraction(name):g}" for name in args.families})
        ),
        "architecture": RECIPE.architecture,
        "architecture_options": RECIPE.architecture_options,
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
    }
    results_path = os.path.join(args.out, "results.json")
    results = {"settings": settings, "families": {}}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        changed = {
            key: (results["settings"].get(key), settings[key])
            for key in SETTINGS_KEYS
            if results["settings"].get(key) != settings[key]
        }
        if changed:
            raise SystemExit(
                f"{results_path} holds results trained with other settings "
                f"(stored, now): {changed}. Use a new --out folder."
            )
    log(
        f"backend={settings['backend']} train={len(x_train)} val={len(x_val)} "
        f"test={len(x_test)} epochs={args.epochs} families={','.join(args.families)}"
    )

    for family in args.families:
        if family in results["families"]:
            log(f"{family}: results found in {results_path}, skipped")
            continue
        folder = os.path.join(args.out, family)
        os.makedirs(folder, exist_ok=True)
        results["families"][family] = train_family(family, args, (x_train, x_val, x_test), folder)
        write_json_atomic(results_path, results, overwrite=True)

    rows = [
        (
            entry["label"],
            entry["test"]["psnr_db"],
            np.load(os.path.join(args.out, family, "reconstructions.npy"), allow_pickle=False),
        )
        for family, entry in sorted(
            results["families"].items(), key=lambda item: FAMILIES.index(item[0])
        )
    ]
    figure_path = os.path.join(args.out, "families_mnist.png")
    write_figure(figure_path, x_test[:FIGURE_IMAGES], rows)
    log(f"wrote {results_path} and {figure_path}")


if __name__ == "__main__":
    main()
