"""Training step of an "ldm"-architecture KL-VAE on every Keras backend, against
diffusers' `AutoencoderKL` at the same configuration on PyTorch.

What it measures
----------------
vqkeras: `build_autoencoder("klvae", (S, S, 3), architecture="ldm", channels=C,
channel_multipliers=M, num_res_blocks=R, latent_dim=4)` (GroupNorm 32 groups,
attention in the middle blocks only, `quant_conv` and `post_quant_conv`),
compiled with Adam and trained by `model.fit` on random uint8 images in batches
of `--batch-size`: reconstruction MSE plus the weighted KL, a sampled latent,
the KL-VAE's logged metrics, as every vqkeras training step does.

diffusers: `AutoencoderKL(block_out_channels=C * M, layers_per_block=R,
latent_channels=4, norm_num_groups=32)` with `DownEncoderBlock2D` /
`UpDecoderBlock2D` blocks (the same layers and weights' shapes), a hand-written
PyTorch step: `encode`, `latent_dist.sample()`, `decode`, MSE plus the
weighted KL (`latent_dist.kl()`), `backward`, `torch.optim.Adam.step`, on
random images in [-1, 1], eager (as diffusers' training scripts run it).

Both: the first epoch (tracing, compilation, allocator warm-up) is not counted;
a step's time is a timed epoch's wall time over its `--steps` steps (vqkeras:
from `on_epoch_begin` to `on_epoch_end`, which waits for the last step's
logs); per image is that over the batch. The workers run in turn, diffusers
first, `--repeats` times; "best" is the fastest of all of a run's timed epochs
(the least disturbed by other processes), "median" their median. "x
diffusers" is a backend's time over diffusers' in the same run, best against
best (issue 35's target: at most 1.2 on the fastest backend).

How to run
----------
    python benchmarks/ldm_train_step.py                   # every backend and diffusers
    python benchmarks/ldm_train_step.py --backends torch --steps 4 --epochs 2
    python benchmarks/ldm_train_step.py --threads 1 --json results.json

Each backend, and diffusers, runs in its own process, one after the other, with
each library's default threads unless `--threads`. A Markdown table goes to
stdout, progress to stderr, with the load average before and after: run it on
an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from worker_setup import log, start_worker, thread_env

BACKENDS = ("tensorflow", "jax", "torch")
KL_WEIGHT = 1e-6
LEARNING_RATE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--no-diffusers", action="store_true", help="skip the diffusers run")
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--multipliers", default="1,2,2", help="channel multipliers")
    parser.add_argument("--res-blocks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one untimed)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of all the workers, one after the other"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads per library")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def multipliers(args):
    return tuple(int(m) for m in args.multipliers.split(","))


def time_vqkeras(args):
    """Step times in s of `model.fit`'s timed epochs on this process's Keras backend."""
    import keras
    import numpy as np

    from vqkeras.models.factory import build_autoencoder

    start_worker(args.worker, args.threads)
    model = build_autoencoder(
        "klvae",
        (args.size, args.size, 3),
        architecture="ldm",
        channels=args.channels,
        channel_multipliers=multipliers(args),
        num_res_blocks=args.res_blocks,
        latent_dim=4,
        kl_weight=KL_WEIGHT,
    )
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.steps * args.batch_size, args.size, args.size, 3), "uint8")

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(
        images,
        epochs=args.epochs + 1,
        batch_size=args.batch_size,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return [t / args.steps for t in timer.times[1:]], model.count_params()


def time_diffusers(args):
    """Step times in s of diffusers' AutoencoderKL's timed epochs, eager PyTorch."""
    import torch
    from diffusers import AutoencoderKL

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    levels = len(multipliers(args))
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(args.channels * m for m in multipliers(args)),
        layers_per_block=args.res_blocks,
        latent_channels=4,
        norm_num_groups=32,
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    images = torch.rand(args.steps, args.batch_size, 3, args.size, args.size) * 2 - 1
    pixel_values = 3 * args.size**2

    def step(x):
        posterior = model.encode(x).latent_dist
        reconstruction = model.decode(posterior.sample()).sample
        # vqkeras's KL-VAE loss: MSE on the [0, 1] scale plus the KL per pixel value.
        loss = torch.mean(((reconstruction - x) / 2) ** 2)
        loss = loss + KL_WEIGHT * posterior.kl().mean() / pixel_values
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    times = []
    for _ in range(args.epochs + 1):
        start = time.perf_counter()
        for x in images:
            step(x)
        times.append(time.perf_counter() - start)
    return [t / args.steps for t in times[1:]], sum(p.numel() for p in model.parameters())


def worker(args):
    seconds, parameters = (time_diffusers if args.worker == "diffusers" else time_vqkeras)(args)
    print(json.dumps({"steps_s": seconds, "parameters": parameters, "threads": threads_used(args)}))


def threads_used(args):
    if args.worker in ("torch", "diffusers"):
        import torch

        return torch.get_num_threads()
    return args.threads or os.cpu_count()


def run_worker(name, args, argv):
    env = dict(os.environ, **thread_env(args.threads))
    if name != "diffusers":
        env["KERAS_BACKEND"] = name
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", name]
    log(f"{name}: running")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        log(done.stderr[-3000:])
        raise SystemExit(f"{name}: worker failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    log(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    names = ([] if args.no_diffusers else ["diffusers"]) + list(args.backends)
    results = {}
    for _ in range(args.repeats):
        for name in names:
            result = run_worker(name, args, argv)
            result["steps_s"] = results.get(name, {}).get("steps_s", []) + result["steps_s"]
            results[name] = result
    for result in results.values():
        result["best_s"] = min(result["steps_s"])
        result["median_s"] = statistics.median(result["steps_s"])
    load_after = os.getloadavg()
    log(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    reference = results.get("diffusers", {}).get("best_s")
    print(
        f"KL-VAE, ldm architecture: channels {args.channels}, multipliers {args.multipliers}, "
        f"{args.res_blocks} res blocks, {args.size}x{args.size} images, batch {args.batch_size}; "
        f"{args.repeats} x {args.epochs} timed epochs of {args.steps} steps; "
        f"{platform.processor() or platform.machine()} "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after\n"
    )
    print(
        "| run | parameters | threads | ms / step, best | median | ms / image, best | x diffusers |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        best_ms, median_ms = 1e3 * result["best_s"], 1e3 * result["median_s"]
        ratio = f"{result['best_s'] / reference:.2f}" if reference else "-"
        label = "diffusers AutoencoderKL (PyTorch)" if name == "diffusers" else f"vqkeras {name}"
        print(
            f"| {label} | {result['parameters']:,} | {result['threads']} | {best_ms:.0f} | "
            f"{median_ms:.0f} | {best_ms / args.batch_size:.1f} | {ratio} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"settings": vars(args), "load_average": [load_before, load_after], **results},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
