"""`vqkeras reconstruct`: images through an autoencoder, with a picture and
per-image metrics.

Writes to the output folder:

    reconstructions.png   the first 64 images, rows of inputs over rows of
                          their reconstructions
    metrics.csv           per image: index, name and label where known, mse,
                          psnr_db, ssim
    summary.json          the model, the input, the counts of images and
                          skipped files, the mean metrics (as
                          `vqkeras.evaluation.evaluate_reconstructions`
                          computes them) and, for VQ models, the codebook
                          usage and perplexity

Examples:

    vqkeras reconstruct --model vqvae_mnist --input sample:mnist --out runs/reconstruct
    vqkeras reconstruct --model vqvae_mnist --input my_digits/ --out runs/mine
"""

import csv

import numpy as np

from vqkeras.apps import models
from vqkeras.apps.images import image_grid, paired_rows, to_uint8, write_png
from vqkeras.apps.inputs import load_images, model_image_shape
from vqkeras.apps.outputs import describe_input, make_folder, output_paths
from vqkeras.evaluation import psnr_db, ssim_per_image
from vqkeras.file_io import write_atomic, write_json_atomic
from vqkeras.validation import to_unit_range

GRID_IMAGES = 64
GRID_COLUMNS = 8
OUTPUTS = ("reconstructions.png", "metrics.csv", "summary.json")


def per_image_metrics(images, reconstructions):
    """`{"mse", "psnr_db", "ssim"}` arrays, one value per image, on the [0, 1]
    scale, as in `vqkeras.evaluation.evaluate_reconstructions`."""
    target = to_unit_range(images)
    mse = np.mean(np.square(reconstructions - target), axis=(1, 2, 3))
    return {"mse": mse, "psnr_db": psnr_db(mse), "ssim": ssim_per_image(target, reconstructions)}


def write_metrics_csv(path, metrics, names, labels, overwrite):
    columns = ["index", *(["name"] if names else []), *(["label"] if labels is not None else [])]
    columns += list(metrics)

    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for index in range(len(metrics["mse"])):
            row = [index, *([names[index]] if names else [])]
            row += [int(labels[index])] if labels is not None else []
            row += [f"{float(values[index]):.6g}" for values in metrics.values()]
            writer.writerow(row)

    write_atomic(path, write, overwrite=overwrite)


def run(args):
    paths = output_paths(args.out, OUTPUTS, args.overwrite)
    model = models.load_model(args.model)
    channels, size = model_image_shape(model)
    inputs = load_images(
        args.input, args.split, channels, size, args.strict, args.limit, args.quiet
    )
    reconstructions = models.reconstruct(model, inputs.images, args.batch_size, args.quiet)
    metrics = per_image_metrics(inputs.images, reconstructions)
    summary = {
        "model": args.model,
        **describe_input(args.input, args.split),
        "images": len(inputs.images),
        "skipped": len(inputs.skipped),
        "skipped_files": inputs.skipped,
        "mse": float(np.mean(metrics["mse"])),
        "psnr_db": float(np.mean(metrics["psnr_db"])),
        "psnr_std_db": float(np.std(metrics["psnr_db"])),
        "ssim": float(np.mean(metrics["ssim"])),
    }
    if model.code_grids():
        codes = models.encode(model, inputs.images, args.batch_size, args.quiet)
        summary.update(models.codebook_statistics(codes, model))

    make_folder(paths["summary.json"])
    shown = slice(0, GRID_IMAGES)
    rows = paired_rows(inputs.images[shown], to_uint8(reconstructions[shown]), GRID_COLUMNS)
    write_png(
        paths["reconstructions.png"],
        image_grid(rows, GRID_COLUMNS, rows_per_group=2),
        args.overwrite,
    )
    write_metrics_csv(paths["metrics.csv"], metrics, inputs.names, inputs.labels, args.overwrite)
    write_json_atomic(paths["summary.json"], summary, overwrite=args.overwrite)
    return summary
