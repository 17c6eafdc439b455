"""`vqkeras compress` / `vqkeras decompress`: images to a compressed file, and back.

Compress encodes the images to codes with a discrete model (VQVAE, or RQVAE
with `--depth` levels) and range-codes the codes under an autoregressive prior
(PixelCNN or Transformer). The prior models one code grid size, that of the
model's trained image size (32x32 for the CIFAR-10 zoo): images of another
size are refused, unless `--size HxW` (that size) resizes them. The
file holds the model and prior names and the sha256 of their weights, the
images' shape and count, the class labels of a class-conditional prior (from
the input, or `--label`) and the coded codes (docs/compression.md).

Decompress reads such a file with the presets it names (or `--model` and
`--prior`, holding the same weights), on the Keras backend that wrote it,
and writes to the output folder:

    decompressed.png   a grid of the first 64 images
    images.npz         `images` uint8 `(N, H, W, C)`, and `labels` where the
                       prior is class-conditional

Examples:

    vqkeras compress --model vqvae_mnist --prior pixelcnn_vqvae_mnist --input sample:mnist \\
        --out runs/mnist.vqkc
    vqkeras decompress runs/mnist.vqkc --out runs/mnist
"""

import os

import numpy as np

from vqkeras.apps.images import image_grid, to_uint8, write_png
from vqkeras.apps.inputs import load_images_of_size, model_image_shape
from vqkeras.apps.outputs import check_outputs, describe_input, make_folder, output_paths
from vqkeras.compression import Codec, read_header
from vqkeras.file_io import write_atomic

GRID_IMAGES = 64
GRID_COLUMNS = 8


def _labels(codec, inputs, label):
    """The labels to code: none for an unconditional prior; else `--label`
    for every image, or the input's labels."""
    prior = codec.prior
    if not prior.conditional:
        if label is not None:
            raise ValueError(f"--label given, but prior {codec.prior_name!r} is unconditional.")
        return None
    if label is not None:
        if not 0 <= label < prior.num_classes:
            raise ValueError(
                f"--label must be in [0, {prior.num_classes}). Received: --label {label}"
            )
        return np.full(len(inputs.images), label)
    if inputs.labels is None:
        raise ValueError(
            f"Prior {codec.prior_name!r} is class-conditional: the input has no labels; "
            "give --label."
        )
    return inputs.labels


def compress(args):
    check_outputs([args.out], args.overwrite)
    if os.path.isdir(args.out):
        raise IsADirectoryError(f"--out {args.out!r} is a folder: expected a file name.")
    codec = Codec(args.model, args.prior, depth=args.depth)
    channels, size = model_image_shape(codec.model)
    inputs = load_images_of_size(args, channels, size, f"Compressing under prior {args.prior!r}")
    compressed = codec.compress(
        inputs.images, _labels(codec, inputs, args.label), batch_size=args.batch_size
    )
    make_folder(args.out)
    write_atomic(args.out, lambda f: f.write(compressed.data), overwrite=args.overwrite, mode="wb")
    count = len(compressed.codes)
    return {
        "model": args.model,
        "prior": args.prior,
        **describe_input(args.input, args.split),
        "images": count,
        "code_shape": list(codec.code_shape),
        "bytes": len(compressed.data),
        "bits_per_image": len(compressed.data) * 8 / count,
        "nll_bits_per_image": compressed.nll_bits / count,
        "out": args.out,
    }


def decompress(args):
    paths = output_paths(args.out, ("decompressed.png", "images.npz"), args.overwrite)
    with open(args.file, "rb") as f:
        data = f.read()
    header = read_header(data, args.file)
    codec = Codec(args.model or header.model, args.prior or header.prior)
    restored = codec.decompress(data, batch_size=args.batch_size, source=args.file)
    images = to_uint8(restored.images)
    rows = [
        list(images[start : start + GRID_COLUMNS])
        for start in range(0, min(GRID_IMAGES, len(images)), GRID_COLUMNS)
    ]
    make_folder(paths["decompressed.png"])
    write_png(paths["decompressed.png"], image_grid(rows, GRID_COLUMNS), args.overwrite)
    arrays = {"images": images}
    if restored.labels is not None:
        arrays["labels"] = restored.labels
    write_atomic(
        paths["images.npz"], lambda f: np.savez(f, **arrays), overwrite=args.overwrite, mode="wb"
    )
    return {
        "file": args.file,
        "model": codec.model_name,
        "prior": codec.prior_name,
        "images": len(images),
        "out": paths,
    }
