"""Sampling speed of every prior kind: naive loops against the compiled samplers.

What it measures
----------------
Drawing 64 code grids from (untrained) unconditional priors:

- `PixelCNNPrior` with the architecture of the MNIST zoo prior (64 filters, 4 gated
  blocks of kernel 5, embedding 64), for a 7x7 grid with K=128 codes and an 8x8 grid
  with K=512:
  - naive: `h * w` calls of `prior.predict` on the whole batch of grids, each followed
    by a NumPy categorical draw of the codes at the next position (the keras.io
    tutorial's loop);
  - compiled: `prior.sample(64, seed=...)`.
- `TransformerPrior` (embed_dim 128, 4 heads, 4 layers) for the 8x8 grid, K=512:
  - naive: `sample(64, use_cache=False)`, the same compiled loop running the whole
    sequence through the blocks at every step;
  - compiled: `sample(64)`, one step per token on a fixed-size key/value cache.
- `MaskGITPrior` of the same size and grid: `sample(64, num_steps=8)` and
  `num_steps=12`, whose times are compared with the Transformer's cached sampling.

Compiled means one `jax.jit` on JAX, one `tf.function` on TensorFlow, an eager
no-grad loop on PyTorch. The first call of each sampler (which traces and compiles)
is listed apart; the time kept is the median of `--repeats` later calls, each waited
for until its result is on the host. Speedup = naive / compiled. Weights do not change
the work done, so untrained priors give the same timings as trained ones.

Across backends: "x fastest" is a backend's compiled time over the fastest
backend's for the same prior and grid in the same run (issue 18's target for the
PixelCNN's 7x7 grids: at most 1.5). Beside it, each backend's float32 1024x1024
matrix product through `keras.ops`, in GFLOP/s, timed in the same process: the
machine's practical ceiling for that library. The samplers' own FLOP rates are
not given: their work is hundreds of small steps in a loop, which XLA's cost
analysis counts once, and the steps are bound by per-step overhead, not by
arithmetic.

How to run
----------
    python benchmarks/sampling.py                      # all backends, one process each
    python benchmarks/sampling.py --backend jax        # one backend
    python benchmarks/sampling.py --repeats 5 --json results.json

The Markdown table goes to stdout, progress to stderr. The machine should be otherwise
idle: the script prints the load average before and after.
"""

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

from worker_setup import log, matmul_gflops

BACKENDS = ("tensorflow", "jax", "torch")
CASES = (((7, 7), 128), ((8, 8), 512))
NUM_SAMPLES = 64
ARCHITECTURE = {"filters": 64, "num_blocks": 4, "kernel_size": 5, "embedding_dim": 64}
TRANSFORMER_CASE = ((8, 8), 512)
TRANSFORMER_ARCHITECTURE = {"embed_dim": 128, "num_heads": 4, "num_layers": 4}
MASKGIT_STEPS = (8, 12)


def naive_sample(prior, num, seed):
    """The keras.io loop: one eager `predict` per position, a NumPy draw after each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = prior.grid_shape
    grids = np.zeros((num, height, width), dtype="int32")
    for i in range(height):
        for j in range(width):
            logits = prior.predict(grids, batch_size=num, verbose=0)[:, i, j].astype("float64")
            probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            cdf = np.cumsum(probs, axis=-1)
            draws = rng.random((num, 1)) * cdf[:, -1:]
            grids[:, i, j] = np.minimum((cdf < draws).sum(axis=-1), probs.shape[-1] - 1)
    return grids


def timed_calls(sample, repeats, **options):
    """`(first call ms, median of the next `repeats` calls ms)` of
    `sample(NUM_SAMPLES, seed=seed, **options)`."""
    import keras

    times = []
    for seed in range(repeats + 1):
        start = time.perf_counter()
        # Converting to NumPy waits for the result (JAX dispatches asynchronously).
        keras.ops.convert_to_numpy(sample(NUM_SAMPLES, seed=seed, **options))
        times.append(1000 * (time.perf_counter() - start))
    return times[0], statistics.median(times[1:])


def row(prior_kind, grid_shape, num_embeddings, naive, compiled, naive_first=None):
    """One table row: the naive and compiled `(first, median)` times in ms."""
    keras = importlib.import_module("keras")
    result = {
        "backend": keras.config.backend(),
        "prior": prior_kind,
        "grid": f"{grid_shape[0]}x{grid_shape[1]}",
        "num_embeddings": num_embeddings,
        "naive_ms": naive[1],
        "naive_first_call_ms": naive[0],
        "compiled_first_call_ms": compiled[0],
        "compiled_ms": compiled[1],
        "speedup": naive[1] / compiled[1],
    }
    log(json.dumps(result))
    return result


def run_backend(repeats):
    """Times every case on the backend of this process; returns a list of rows."""
    keras = importlib.import_module("keras")
    from vqkeras.models import MaskGITPrior, PixelCNNPrior, TransformerPrior

    rows = []
    for grid_shape, num_embeddings in CASES:
        keras.utils.set_random_seed(0)
        prior = PixelCNNPrior(num_embeddings, grid_shape, **ARCHITECTURE)
        prior.build()
        start = time.perf_counter()
        naive_sample(prior, NUM_SAMPLES, seed=0)
        naive_ms = 1000 * (time.perf_counter() - start)
        compiled = timed_calls(prior.sample, repeats)
        rows.append(row("PixelCNN", grid_shape, num_embeddings, (naive_ms, naive_ms), compiled))

    grid_shape, num_embeddings = TRANSFORMER_CASE
    keras.utils.set_random_seed(0)
    prior = TransformerPrior(num_embeddings, grid_shape, **TRANSFORMER_ARCHITECTURE)
    prior.build()
    recompute = timed_calls(prior.sample, repeats, use_cache=False)
    cached = timed_calls(prior.sample, repeats)
    rows.append(row("Transformer", grid_shape, num_embeddings, recompute, cached))
    maskgit = MaskGITPrior(num_embeddings, grid_shape, **TRANSFORMER_ARCHITECTURE)
    maskgit.build()
    for steps in MASKGIT_STEPS:
        parallel = timed_calls(maskgit.sample, repeats, num_steps=steps)
        # MaskGIT's "naive" baseline: the Transformer's cached sampling.
        rows.append(row(f"MaskGIT, {steps} steps", grid_shape, num_embeddings, cached, parallel))
    gflops = matmul_gflops()
    log(f"float32 1024x1024 matmul: {gflops:.1f} GFLOP/s")
    return [{**result, "matmul_gflops": gflops} for result in rows]


def markdown(rows):
    lines = [
        f"{NUM_SAMPLES} samples. PixelCNN: {ARCHITECTURE}; naive = the keras.io predict "
        f"loop. Transformer and MaskGIT: {TRANSFORMER_ARCHITECTURE}; the Transformer's "
        "naive = recomputing the sequence per token, compiled = key/value cache; "
        "MaskGIT's naive = the Transformer's cached sampling.",
        "",
        "| backend | prior | grid | K | naive (ms) | compiled, first call (ms) "
        "| compiled (ms) | speedup | x fastest | matmul GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fastest = {}
    for row in rows:
        case = (row["prior"], row["grid"])
        fastest[case] = min(fastest.get(case, float("inf")), row["compiled_ms"])
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['prior']} | {row['grid']} | {row['num_embeddings']} "
            f"| {row['naive_ms']:.0f} | {row['compiled_first_call_ms']:.0f} "
            f"| {row['compiled_ms']:.0f} | {row['speedup']:.1f}x "
            f"| {row['compiled_ms'] / fastest[(row['prior'], row['grid'])]:.2f} "
            f"| {row['matmul_gflops']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="run one backend in this process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be a positive integer")

    if args.worker:
        print(json.dumps(run_backend(args.repeats)))
        return
    log(f"load average before: {os.getloadavg()}")
    rows = []
    for backend in [args.backend] if args.backend else BACKENDS:
        log(f"backend {backend} ...")
        # One process per backend: the Keras backend is fixed at import.
        result = subprocess.run(
            [sys.executable, __file__, "--worker", "--repeats", str(args.repeats)],
            env={**os.environ, "KERAS_BACKEND": backend},
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
        rows += json.loads(result.stdout.strip().splitlines()[-1])
    log(f"load average after: {os.getloadavg()}")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
