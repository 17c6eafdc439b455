"""`vqkeras reconstruct`: images through an autoencoder, each at its own size,
with pictures and per-image metrics.

Each image goes through the model at its own size (padded by reflection to
a multiple of the model's downsampling factor, cropped back; large images in
tiles: `vqkeras.native_size`), unless `--size HxW` resizes them all
(bilinear). Writes to the output folder:

    reconstructions/      one PNG per image at its own size, named after its
                          input file (photo.jpg -> photo.png; a name met
                          before gets _1, _2, ...; inputs without files are
                          numbered: 000.png, 001.png, ...)
    reconstructions.png   the first 64 images, rows of inputs over rows of
                          their reconstructions (images of several sizes, or
                          larger than 128 pixels, as thumbnails)
    metrics.csv           per image: index, name and label where known,
                          file, height, width, latents (a VQ model's code
                          grid shapes, e.g. indices:8x8, or latents:8x8x4),
                          mse, psnr_db, ssim (empty below SSIM's 11x11
                          window)
    summary.json          the model, the input, the counts of images and
                          skipped files, the mean metrics and, for VQ
                          models, the codebook usage and perplexity (as
                          `vqkeras.evaluation.evaluate_reconstructions`
                          computes them; over all codes for images of
                          several sizes) and, in `per_image`, each image's
                          size, latent shapes, mse, psnr_db and ssim

Examples:

    vqkeras reconstruct --model vqvae_mnist --input sample:mnist --out runs/reconstruct
    vqkeras reconstruct --model vqvae_cifar10 --input photos/ --out runs/photos
    vqkeras reconstruct --model vqvae_cifar10 --input photos/ --size 32x32 --out runs/small
"""

import csv
import os

from vqkeras.apps import models
from vqkeras.apps.images import image_grid, paired_rows, thumbnails, to_uint8, write_png
from vqkeras.apps.inputs import load_command_images
from vqkeras.apps.outputs import describe_input, image_file_names, output_paths
from vqkeras.file_io import write_atomic, write_json_atomic

GRID_IMAGES = 64
GRID_COLUMNS = 8
IMAGE_FOLDER = "reconstructions"
OUTPUTS = (IMAGE_FOLDER, "reconstructions.png", "metrics.csv", "summary.json")
METRICS = ("mse", "psnr_db", "ssim")


def _latents_text(shapes):
    """e.g. "indices:8x8", "top:4x4 bottom:8x8" or "latents:8x8x4"."""
    return " ".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def write_metrics_csv(path, per_image, overwrite):
    first = per_image[0]
    columns = ["index", *(key for key in ("name", "label") if key in first)]
    columns += ["file", "height", "width", "latents", *METRICS]

    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for entry in per_image:
            row = [entry[key] for key in columns[: columns.index("file") + 1]]
            row += [*entry["size"], _latents_text(entry["latent_shapes"])]
            row += ["" if entry[key] is None else f"{entry[key]:.6g}" for key in METRICS]
            writer.writerow(row)

    write_atomic(path, write, overwrite=overwrite)


def run(args):
    paths = output_paths(args.out, OUTPUTS, args.overwrite)
    model = models.load_model(args.model)
    inputs = load_command_images(args, model.image_channels)
    reconstructions, per_image, means = models.reconstruction_report(
        model, inputs, args.batch_size, args.quiet
    )
    files = image_file_names(inputs.names, len(per_image))
    for entry, file in zip(per_image, files):
        entry["file"] = f"{IMAGE_FOLDER}/{file}"
    summary = {
        "model": args.model,
        **describe_input(args.input, args.split),
        "skipped": len(inputs.skipped),
        "skipped_files": inputs.skipped,
        **means,
        "per_image": per_image,
    }

    os.makedirs(paths[IMAGE_FOLDER], exist_ok=True)
    outputs = [to_uint8(reconstruction) for reconstruction in reconstructions]
    for file, output in zip(files, outputs):
        write_png(os.path.join(paths[IMAGE_FOLDER], file), output, args.overwrite)
    shown = slice(0, GRID_IMAGES)
    tiles = thumbnails([*inputs.images[shown], *outputs[shown]])
    rows = paired_rows(tiles[: len(tiles) // 2], tiles[len(tiles) // 2 :], GRID_COLUMNS)
    write_png(
        paths["reconstructions.png"],
        image_grid(rows, GRID_COLUMNS, rows_per_group=2),
        args.overwrite,
    )
    write_metrics_csv(paths["metrics.csv"], per_image, args.overwrite)
    write_json_atomic(paths["summary.json"], summary, overwrite=args.overwrite)
    return summary
