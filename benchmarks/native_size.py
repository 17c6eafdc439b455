"""`vqkeras reconstruct` at images' own sizes: time and peak memory of a large
image, and PSNR on photos.

Two measurements, each a fresh `python -m vqkeras.apps reconstruct` process
(start-up, imports, loading the preset, reconstructing, encoding for the
codebook figures, SSIM and writing the outputs all counted), as a user runs
it:

- large: one `--size`-pixel square RGB image (default 2048: the first photo
  resized to it, bicubic), on each backend of `--backends`: the wall time
  and the peak resident memory of the process (its `ru_maxrss`, from
  `os.wait4`).
- photos: the photos given (default: the photo matplotlib ships as sample
  data, grace_hopper.jpg, 512x600), at their own sizes, and resized by
  each other factor of `--scales` (bicubic; e.g. 0.5 for a smaller, more
  detailed picture of the same scene), on the first backend: each one's
  PSNR and SSIM from the command's summary.json.

    python benchmarks/native_size.py [--photos a.jpg b.jpg ...] [--scales 1 0.5] \\
        [--model vqvae_cifar10] [--backends jax tensorflow torch] [--size 2048] \\
        [--out results.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_photos():
    from matplotlib import cbook

    return [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def reconstruct(backend, model, inputs, out):
    """`(seconds, peak resident MB, summary)` of one `vqkeras reconstruct` run."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "vqkeras.apps", "reconstruct", "--model", model]
    command += ["--input", *inputs, "--out", out, "--quiet"]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return seconds, usage.ru_maxrss / 1024, summary  # ru_maxrss is in KiB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", nargs="+", help="photos (default: matplotlib's sample)")
    parser.add_argument("--model", default="vqvae_cifar10")
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0], help="photo sizes")
    parser.add_argument("--size", type=int, default=2048, help="side of the large image")
    parser.add_argument("--out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    photos = args.photos or default_photos()
    results = {"model": args.model, "large": {}, "photos": {}}
    with tempfile.TemporaryDirectory() as tmp:
        large = os.path.join(tmp, f"large_{args.size}.png")
        with Image.open(photos[0]) as photo:
            photo.convert("RGB").resize((args.size, args.size), Image.Resampling.BICUBIC).save(
                large
            )
        for backend in args.backends:
            seconds, peak_mb, summary = reconstruct(
                backend, args.model, [large], os.path.join(tmp, f"large_{backend}")
            )
            results["large"][backend] = {
                "size": summary["per_image"][0]["size"],
                "seconds": round(seconds, 1),
                "peak_resident_mb": round(peak_mb),
                "psnr_db": round(summary["psnr_db"], 2),
            }
            print(backend, results["large"][backend], flush=True)
        scaled = []
        for photo_path in photos:
            stem = os.path.splitext(os.path.basename(photo_path))[0]
            with Image.open(photo_path) as photo:
                photo = photo.convert("RGB")
                for scale in args.scales:
                    size = (round(photo.width * scale), round(photo.height * scale))
                    scaled.append(os.path.join(tmp, f"{stem}_x{scale:g}.png"))
                    photo.resize(size, Image.Resampling.BICUBIC).save(scaled[-1])
        backend = args.backends[0]
        seconds, peak_mb, summary = reconstruct(
            backend, args.model, scaled, os.path.join(tmp, "photos")
        )
        results["photos"] = {
            "backend": backend,
            "seconds": round(seconds, 1),
            "peak_resident_mb": round(peak_mb),
            "images": [
                {
                    "name": os.path.basename(entry["name"]),
                    "size": entry["size"],
                    "psnr_db": round(entry["psnr_db"], 2),
                    "ssim": None if entry["ssim"] is None else round(entry["ssim"], 4),
                }
                for entry in summary["per_image"]
            ],
        }
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
