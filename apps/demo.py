"""`vqkeras demo`: the zoo at work on the embedded samples, offline, in one command.

    vqkeras demo --out demo

Runs the other commands on the images shipped with vqkeras (the first 256
test images of MNIST and CIFAR-10) and writes to the output folder:

    reconstruct_mnist/      vqvae_mnist's reconstructions: picture, a PNG and
                            metrics per image, summary (`vqkeras reconstruct`)
    reconstruct_cifar10/    the same with vqvae_cifar10, when it is shipped
    latents_mnist/          the 7x7 code grids of the MNIST sample, a picture
                            of them (`vqkeras export-latents`), and the images
                            decoded back from them (`--decode`)
    samples_mnist/          new digits from pixelcnn_vqvae_mnist, each digit in
                            turn (`vqkeras sample`)
    summary.json            what each step reported, and its wall time
"""

import os
import time

from vqkeras import zoo
from vqkeras.file_io import write_json_atomic


def _steps(out, has_cifar10):
    """`(name, command line)` of each step, in order."""
    steps = [
        ("reconstruct_mnist", ["reconstruct", "--model", "vqvae_mnist", "--input", "sample:mnist"]),
    ]
    if has_cifar10:
        steps.append(
            (
                "reconstruct_cifar10",
                ["reconstruct", "--model", "vqvae_cifar10", "--input", "sample:cifar10"],
            )
        )
    codes = os.path.join(out, "latents_mnist", "codes.npz")
    steps += [
        (
            "latents_mnist",
            ["export-latents", "--model", "vqvae_mnist", "--input", "sample:mnist"],
            codes,
        ),
        (
            "decoded_mnist",
            ["export-latents", "--model", "vqvae_mnist", "--decode", codes],
            os.path.join(out, "latents_mnist", "decoded"),
        ),
        (
            "samples_mnist",
            ["sample", "--model", "vqvae_mnist", "--prior", "pixelcnn_vqvae_mnist"]
            + ["--num", "40", "--seed", "0"],
        ),
    ]
    return [
        (name, [*command, "--out", target[0] if target else os.path.join(out, name)])
        for name, command, *target in steps
    ]


def run(args):
    from vqkeras.apps.cli import build_parser

    summary_path = os.path.join(args.out, "summary.json")
    if os.path.exists(summary_path) and not args.overwrite:
        raise FileExistsError(f"{summary_path} already exists; pass --overwrite to replace it.")
    parser = build_parser()
    summary = {}
    for name, command in _steps(args.out, "vqvae_cifar10" in zoo.list()):
        flags = ["--quiet"] + (["--overwrite"] if args.overwrite else [])
        step = parser.parse_args([*command, *flags])
        start = time.perf_counter()
        report = step.run(step)
        summary[name] = {"command": "vqkeras " + " ".join(command), **report}
        summary[name]["seconds"] = round(time.perf_counter() - start, 2)
    write_json_atomic(summary_path, summary, overwrite=args.overwrite)
    return summary
