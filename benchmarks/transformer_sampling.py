"""Sampling speed of `TransformerPrior`: key/value cache vs recomputing every token.

What it measures
----------------
Drawing 64 code grids of 8x8 (K=512) from an untrained unconditional
`TransformerPrior` (embed_dim 128, 4 heads, 4 layers) on the current backend
(`KERAS_BACKEND`):

- cached: `prior.sample(64, seed=...)`: one step per token, the blocks run on the new
  token only against a fixed-size key/value cache;
- recompute: `prior.sample(64, seed=..., use_cache=False)`: the same compiled loop, but
  each step runs the whole sequence through the blocks.

Both are compiled the same way (a `jax.jit`ted `fori_loop` on JAX, a `tf.function` on
TensorFlow, an eager no-grad loop on PyTorch). The first call of each (trace and
compile) is listed apart; the time kept is the median of `--repeats` later calls.
Weights do not change the work done, so an untrained prior gives the same timings as
a trained one.

How to run
----------
    KERAS_BACKEND=jax python benchmarks/transformer_sampling.py --repeats 3
"""

import argparse
import statistics
import sys
import time

NUM_SAMPLES = 64
GRID_SHAPE = (8, 8)
NUM_EMBEDDINGS = 512
ARCHITECTURE = {"embed_dim": 128, "num_heads": 4, "num_layers": 4}


def timed(prior, use_cache):
    """Seconds of one `sample` call, its result waited for on the host."""
    import keras

    start = time.perf_counter()
    result = prior.sample(NUM_SAMPLES, seed=0, use_cache=use_cache)

    keras.ops.convert_to_numpy(result)  # waits for the result on the host
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import keras

    from vqkeras.models import TransformerPrior

    prior = TransformerPrior(NUM_EMBEDDINGS, GRID_SHAPE, **ARCHITECTURE)
    prior.build()
    rows = []
    for name, use_cache in (("cached", True), ("recompute", False)):
        first = timed(prior, use_cache)
        times = [timed(prior, use_cache) for _ in range(args.repeats)]
        rows.append((name, first, statistics.median(times)))
        print(f"{name}: first {first:.2f} s, median {rows[-1][2]:.3f} s", file=sys.stderr)
    backend = keras.config.backend()
    print("| backend | cached (s) | recompute (s) | speedup | first calls (s) |")
    print("|---|---:|---:|---:|---|")
    (_, cached_first, cached), (_, recompute_first, recompute) = rows
    print(
        f"| {backend} | {cached:.3f} | {recompute:.3f} | {recompute / cached:.1f}x "
        f"| {cached_first:.1f} / {recompute_first:.1f} |"
    )


if __name__ == "__main__":
    main()
