"""How predictable are an RQ-VAE's stacked codes? A `PixelCNNPrior` with `depth`,
trained on them, measured level by level.

What it measures
----------------
Encodes a keras.datasets-layout .npz with a trained `RQVAE` (a preset, or a `.keras`
file such as the RQ-VAE of `benchmarks/families.py`), trains a class-conditional
`PixelCNNPrior(depth=...)` of the "pixelcnn-prior" family (`vqkeras.families`) on the
training codes (the last 5000 training images held out for validation) and reports on
the test codes:

- NLL in nats per code, overall and per level (level 0 is the coarsest): the mean
  cross-entropy of each code given the codes before it (earlier positions, all levels;
  the same position, coarser levels) and the label;
- bits per image of the codes under the prior, against `depth * h * w * log2 K` raw;
- the PSNR of the decoded test codes at each depth (what each level buys);

and writes `samples.png`: 10 samples per class, decoded.

How to run
----------
    KERAS_BACKEND=tensorflow python benchmarks/rq_prior.py \\
        --data mnist.npz --rqvae runs/families/full_v2/rqvae/model.keras \\
        --out runs/rq_prior --epochs 3

Trained by `vqkeras.training.train_and_evaluate`, resumably: rerun the same command
after an interruption. The results go to `--out/results.json` and stdout.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np

import vqkeras
from vqkeras.codes import codes_by_name
from vqkeras.evaluation import EVALUATION_BATCH_SIZE, encode_indices, reconstruction_metrics
from vqkeras.families import get_family
from vqkeras.file_io import write_json_atomic
from vqkeras.models import RQVAE
from vqkeras.training import load_npz_splits, train_and_evaluate

VALIDATION_SIZE = 5000
SAMPLES_PER_CLASS = 10
SEED = 0
FAMILY = "pixelcnn-prior"
OPTIONS = {"filters": 64, "num_blocks": 4, "kernel_size": 5, "embedding_dim": 64}


def load_rqvae(path):
    model = (
        keras.saving.load_model(path, compile=False)
        if path.endswith(".keras")
        else vqkeras.from_preset(path)
    )
    if not isinstance(model, RQVAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, expected an RQVAE.")
    return model


def per_level_nll(prior, codes, labels, batch_size=EVALUATION_BATCH_SIZE):
    """Mean cross-entropy (nats) of the codes of each level: `(depth,)`."""
    totals = np.zeros(prior.depth)
    for start in range(0, len(codes), batch_size):
        batch = codes[start : start + batch_size]
        logits = prior.predict((batch, labels[start : start + batch_size]), verbose=0)
        logits = logits - logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(log_probs, batch[..., None], axis=-1)[..., 0]
        totals -= picked.sum(axis=(0, 1, 2))
    return totals / (len(codes) * math.prod(prior.grid_shape))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help=".npz in the keras.datasets layout")
    parser.add_argument("--rqvae", required=True, help="RQVAE preset or .keras file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    rqvae = load_rqvae(args.rqvae)
    with np.load(args.data) as arrays:
        probe = arrays["x_test"][:1]
    image_shape = (*probe.shape[1:3], probe.shape[3] if probe.ndim == 4 else 1)
    data = load_npz_splits(args.data, image_shape, VALIDATION_SIZE)
    family = get_family(FAMILY, kind="prior")
    options = family.options(OPTIONS)
    grid, condition = family.modelled_grids(rqvae.code_grids(), options)
    codes = {
        split: family.inputs(
            codes_by_name(rqvae.code_grids(), encode_indices(rqvae, data[f"x_{split}"])),
            grid,
            condition,
        )
        for split in ("train", "val", "test")
    }
    depth = grid.depth
    num_classes = int(data["y_train"].max()) + 1
    cells = math.prod(grid.spatial_shape)

    def evaluate(prior):
        levels = per_level_nll(prior, codes["test"], data["y_test"])
        psnr_by_depth = [
            reconstruction_metrics(data["x_test"], rqvae.decode_indices(codes["test"][..., :k]))[
                "psnr_db"
            ]
            for k in range(1, depth + 1)
        ]
        labels = np.repeat(np.arange(num_classes), SAMPLES_PER_CLASS).astype("int32")
        start = time.perf_counter()
        samples = keras.ops.convert_to_numpy(prior.sample(len(labels), labels=labels, seed=SEED))
        sampling_time = time.perf_counter() - start
        images = np.clip(keras.ops.convert_to_numpy(rqvae.decode_indices(samples)), 0.0, 1.0)
        height, width, channels = image_shape
        mosaic = images.reshape(num_classes, SAMPLES_PER_CLASS, height, width, channels)
        mosaic = mosaic.transpose(0, 2, 1, 3, 4).reshape(
            num_classes * height, SAMPLES_PER_CLASS * width, channels
        )
        keras.utils.save_img(os.path.join(args.out, "samples.png"), mosaic, scale=True)
        return {
            "test_images": len(codes["test"]),
            "nll_nats_per_code": float(levels.mean()),
            "nll_nats_per_code_by_level": [float(value) for value in levels],
            "bits_per_image_under_prior": float(levels.sum() * cells / math.log(2)),
            "bits_per_image_raw": depth * cells * math.log2(grid.num_embeddings),
            "psnr_db_by_depth": psnr_by_depth,
            "sampling_time_s": sampling_time,
            "samples": len(labels),
        }

    run = train_and_evaluate(
        lambda: family.build(
            grid, options, num_classes=num_classes, image_shape=image_shape, name="rq_prior"
        ),
        codes["train"],
        args.out,
        y=data["y_train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=SEED,
        evaluate=evaluate,
        final_fraction=family.final_learning_rate_fraction,
        validation_data=(codes["val"], data["y_val"]),
    )
    results = {
        "backend": keras.config.backend(),
        "rqvae": args.rqvae,
        "family": FAMILY,
        "options": options.as_dict(),
        "grid": list(grid.shape),
        "num_embeddings": grid.num_embeddings,
        "prior_parameters": run.model.count_params(),
        "epochs": args.epochs,
        "fit_time_s": run.fit_time_s,
        **run.evaluation,
    }
    write_json_atomic(os.path.join(args.out, "results.json"), results, overwrite=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
