"""Learned compression (`vqkeras.compression`) beside PNG, JPEG and WebP.

For CIFAR-10 (vqvae_cifar10 + pixelcnn_vqvae_cifar10, and the first 2 levels
of rqvae_cifar10 + pixelcnn_rqvae_cifar10_depth2) and MNIST (vqvae_mnist +
pixelcnn_vqvae_mnist), on the first `--limit` test images of
keras.datasets-layout .npz files: bits per image (the whole file, header
amortised over the images), PSNR and SSIM of the decompressed images (as
uint8, as they are saved), and encode and decode images per second. Beside
it, Pillow's PNG (lossless), and JPEG and WebP at the two qualities whose
mean PSNR brackets vqkeras's (the highest below it, the lowest reaching it),
each image a file of its own, measured on the same
pixels (the CIFAR-10 copy here is itself JPEG-derived: every codec sees
those decoded pixels).

    python benchmarks/image_compression.py --cifar10 path/to/cifar10.npz \\
        --mnist path/to/mnist.npz --limit 500 [--out results.json] [--plot points.png]
    python benchmarks/image_compression.py --from-json results.json --plot points.png

Speeds exclude a warm-up call on a few images (tracing, first-call costs).
"""

import argparse
import io
import json
import time

import keras
import numpy as np
from PIL import Image

from vqkeras.apps.images import to_uint8
from vqkeras.compression import Codec, read_header
from vqkeras.evaluation import EVALUATION_BATCH_SIZE, psnr_db, reconstruction_metrics
from vqkeras.file_io import write_atomic
from vqkeras.validation import to_unit_range

# The (model, prior) presets measured on each data set; with an RQ-VAE, the
# prior's depth is the number of levels coded (rate control).
DATASETS = {
    "cifar10": (
        ("vqvae_cifar10", "pixelcnn_vqvae_cifar10"),
        ("rqvae_cifar10", "pixelcnn_rqvae_cifar10_depth2"),
    ),
    "mnist": (("vqvae_mnist", "pixelcnn_vqvae_mnist"),),
}
QUALITIES = range(1, 101)


def load_test_split(path, limit):
    with np.load(path, allow_pickle=False) as data:
        images, labels = data["x_test"][:limit], data["y_test"][:limit].reshape(-1)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels.astype("int64")


def _pil(image):
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def pillow_codec(images, format, **options):
    """`(bits per image, decoded uint8 images)` with each image a file of its own."""
    total, decoded = 0, []
    for image in images:
        buffer = io.BytesIO()
        _pil(image).save(buffer, format=format, **options)
        total += buffer.tell()
        buffer.seek(0)
        # WebP decodes grayscale images as RGB: back to the input's mode.
        pixels = np.asarray(Image.open(buffer).convert("L" if image.shape[-1] == 1 else "RGB"))
        decoded.append(pixels.reshape(image.shape))
    return total * 8 / len(images), np.stack(decoded)


def mean_psnr(images, decoded):
    """Mean per-image PSNR in dB of uint8 images, as `reconstruction_metrics` has it."""
    error = to_unit_range(images) - to_unit_range(decoded)
    mse = np.mean(np.square(error), axis=tuple(range(1, images.ndim)))
    return float(np.mean(psnr_db(mse)))


def bracketing_qualities(images, format, target_psnr):
    """Pillow's figures at the two qualities whose mean PSNR brackets `target_psnr`.

    Returns `{"below": ..., "at_least": ...}`: the highest quality whose PSNR
    is below the target and the lowest whose PSNR reaches it (None where no
    quality in 1-100 does). Found by bisection, since PSNR rises with quality;
    each probe codes every image, so 8 probes instead of 100 keeps a 10000-image
    run to minutes.
    """
    probes = {}

    def psnr_at(quality):
        if quality not in probes:
            bits, decoded = pillow_codec(images, format, quality=quality)
            probes[quality] = (mean_psnr(images, decoded), bits, decoded)
        return probes[quality][0]

    low, high = QUALITIES[0], QUALITIES[-1]
    if psnr_at(low) >= target_psnr:
        below, at_least = None, low
    elif psnr_at(high) < target_psnr:
        below, at_least = high, None
    else:  # psnr(low) < target <= psnr(high)
        while high - low > 1:
            middle = (low + high) // 2
            if psnr_at(middle) >= target_psnr:
                high = middle
            else:
                low = middle
        below, at_least = low, high

    def figures(quality):
        if quality is None:
            return None
        _, bits, decoded = probes[quality]
        metrics = reconstruction_metrics(images, to_unit_range(decoded))
        return {
            "quality": quality,
            "bits_per_image": bits,
            "psnr_db": metrics["psnr_db"],
            "ssim": metrics["ssim"],
        }

    return {"below": figures(below), "at_least": figures(at_least)}


def measure_vqkeras(images, labels, model, prior, batch_size):
    codec = Codec(model, prior)
    labels = labels if codec.prior.conditional else None
    warm = codec.compress(images[:8], None if labels is None else labels[:8])
    codec.decompress(warm.data)
    start = time.perf_counter()
    compressed = codec.compress(images, labels, batch_size=batch_size)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    restored = codec.decompress(compressed.data, batch_size=batch_size)
    decode_seconds = time.perf_counter() - start
    if not np.array_equal(restored.codes, compressed.codes):
        raise AssertionError("decompress did not give back the codes it was given")
    decoded = to_uint8(restored.images)
    metrics = reconstruction_metrics(images, to_unit_range(decoded))
    count = len(images)
    return {
        "model": model,
        "prior": prior,
        "levels_coded": codec.prior.depth or 1,
        "bits_per_image": len(compressed.data) * 8 / count,
        "nll_bits_per_image": compressed.nll_bits / count,
        "header_bytes": len(compressed.data) - read_header(compressed.data).payload_bytes,
        "psnr_db": metrics["psnr_db"],
        "ssim": metrics["ssim"],
        "encode_images_per_second": count / encode_seconds,
        "decode_images_per_second": count / decode_seconds,
    }


def run(dataset, path, limit, batch_size):
    images, labels = load_test_split(path, limit)
    png_bits, _ = pillow_codec(images, "PNG", optimize=True)
    codecs = []
    for model, prior in DATASETS[dataset]:
        ours = measure_vqkeras(images, labels, model, prior, batch_size)
        codecs.append(
            {
                "vqkeras": ours,
                "jpeg": bracketing_qualities(images, "JPEG", ours["psnr_db"]),
                "webp": bracketing_qualities(images, "WEBP", ours["psnr_db"]),
            }
        )
    return {
        "dataset": dataset,
        "images": len(images),
        "backend": keras.config.backend(),
        "png": {"bits_per_image": png_bits},
        "codecs": codecs,
    }


def plot_rate_quality(results, path):
    """One panel per data set: PSNR against bits per image (log scale) of
    every vqkeras codec and of JPEG and WebP at their bracketing qualities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, result in zip(axes[0], results):
        for name, marker in (("jpeg", "s"), ("webp", "^")):
            points = sorted(
                (side["bits_per_image"], side["psnr_db"])
                for codec in result["codecs"]
                for side in codec[name].values()
                if side is not None
            )
            ax.plot(*zip(*points), marker=marker, linestyle=":", label=f"{name.upper()} (Pillow)")
        for codec in result["codecs"]:
            ours = codec["vqkeras"]
            label = f"vqkeras {ours['model']}" + (
                f", {ours['levels_coded']} levels" if ours["levels_coded"] > 1 else ""
            )
            ax.plot(ours["bits_per_image"], ours["psnr_db"], "o", markersize=8, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("bits per image (log scale)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{result['dataset']}: first {result['images']} test images")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, lambda f: f.write(buffer.getvalue()), overwrite=True, mode="wb")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10", help="keras.datasets-layout cifar10 .npz")
    parser.add_argument("--mnist", help="keras.datasets-layout mnist .npz")
    parser.add_argument("--limit", type=int, default=500, help="first N test images")
    parser.add_argument("--batch-size", type=int, default=EVALUATION_BATCH_SIZE)
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--plot", help="also draw the rate/quality points to this PNG file")
    parser.add_argument(
        "--from-json", help="measure nothing: plot the results of an earlier --out file"
    )
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    else:
        results = [
            run(dataset, path, args.limit, args.batch_size)
            for dataset, path in (("cifar10", args.cifar10), ("mnist", args.mnist))
            if path
        ]
        text = json.dumps(results, indent=2)
        print(text)
        if args.out:
            write_atomic(args.out, lambda f: f.write(text), overwrite=True)
    if args.plot:
        plot_rate_quality(results, args.plot)


if __name__ == "__main__":
    main()
