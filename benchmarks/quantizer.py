"""Forward+backward time of the vqkeras quantizers on every Keras backend.

What it measures
----------------
One training step of each quantizer of 512 codes on inputs of D=64 channels, called as
`layer(x, training=True)`:

- `VectorQuantizer(512, 64)` and `EMAVectorQuantizer(512, 64)`: nearest-code search;
- `FiniteScalarQuantizer((8, 8, 8), embedding_dim=64)`: Dense 64 -> 3, rounding, Dense
  3 -> 64;
- `LookupFreeQuantizer(9, embedding_dim=64)`: Dense 64 -> 9, signs, Dense 9 -> 64, and
  the entropy loss over all 512 codes;
- `GumbelQuantizer(512, 64)`: Dense 64 -> 512 logits, a Gumbel-softmax sample, a
  (512, 64) matmul;
- `VectorQuantizer-options`: `VectorQuantizer(512, 64, code_dim=8,
  normalize_codes=True, kmeans_init=True, gradient_estimator="rotation")`: Dense
  64 -> 8, l2-normalised search, the rotation trick, Dense 8 -> 64 (the k-means of
  the first, untimed step is skipped by a condition in the timed ones);

for two input shapes:

- small: x of shape (64, 8, 8, 64), i.e. 4,096 vectors of D=64, K=512 codes;
- large: x of shape (256, 32, 32, 64), i.e. 262,144 vectors.

A step computes `loss = mean(quantized**2) + sum of the means of the per-sample loss
vectors` (each quantizer's `loss_names`: none for FSQ) and its gradients with respect to
the input and the trainable weights (the EMA quantizer has none; its codebook update runs
in the forward pass). Each backend compiles the step where it can:

- tensorflow: `tf.function` with `GradientTape`, timed with `jit_compile=False` and
  `jit_compile=True`; the faster is kept in the main table (both are listed);
- jax: `jax.jit` of a stateless step, `layer.stateless_call` under
  `jax.value_and_grad`, the updated non-trainable state fed back every step;
- torch: eager `torch.autograd.grad` (`--torch-compile` adds a `torch.compile` try; it
  compiles for 10-20 s per case).

Every timing is the median of `--repeats` steps after `--warmup` untimed ones (the
first of which compiles), each step waited for until its results are ready.

The reference is the NumPy floor (of the nearest-code search, so for FSQ, LFQ and Gumbel,
which search nothing, the ratio only compares their cost with a VQ's): the float32 distances ||x||^2 - 2 x.e + ||e||^2 (one
matmul) and their argmin for the same shapes, i.e. the nearest-code search alone, forward
only. The ratio is quantizer step time / floor; the target of the issue is within 3x of
the floor on the fastest backend. Each floor call is timed right after each step, in the
same process, so that both see the same load from other processes. Beside it, an in-place
floor: the same search written into one preallocated buffer, without ||x||^2 (the argmin
does not change). The plain floor allocates four (N, K) temporaries per call, 2 GB for the
large shape, and zeroing their fresh pages makes it slow and erratic; the in-place floor is
the tighter, steadier reference.

The floor is also timed alone, once with the OpenBLAS environment as given, once with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (like `env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE`: a forced core type can slow NumPy down) and once per `--floor-env`.
The ratios use the environment as given.

How to run
----------
    python benchmarks/quantizer.py                     # all backends, one process each
    python benchmarks/quantizer.py --backend jax       # one backend (or numpy: the floor)
    python benchmarks/quantizer.py --repeats 3 --shapes small --json results.json
    python benchmarks/quantizer.py --quantizers FiniteScalarQuantizer LookupFreeQuantizer
    python benchmarks/quantizer.py --floor-env OPENBLAS_CORETYPE=Haswell
    python benchmarks/quantizer.py --threads 1   # single-threaded, steadier on a busy machine

Markdown tables go to stdout, progress to stderr. Run it on an otherwise idle machine: the
load average before and after is printed. On a busy one, prefer `--threads 1`: a library
that spreads a step over every core stalls whenever one core is taken (torch eager was
seen 10x slower with 2 threads on 2 busy cores).
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from worker_setup import log, start_worker, thread_env

BACKENDS = ("tensorflow", "jax", "torch")
SHAPES = {
    "small": (64, 8, 8, 64),
    "large": (256, 32, 32, 64),
}
NUM_EMBEDDINGS = 512
EMBEDDING_DIM = 64
QUANTIZERS = (
    "VectorQuantizer",
    "EMAVectorQuantizer",
    "FiniteScalarQuantizer",
    "LookupFreeQuantizer",
    "GumbelQuantizer",
    "VectorQuantizer-options",
)
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TARGET_RATIO = 3.0


def time_ms(fn, repeats, warmup, references=None):
    """Wall times in ms of `fn()`: median and min of `repeats` calls after `warmup` untimed ones
    (the first one's time kept apart: it includes compilation).

    `references` maps names to other functions: each timed call of `fn` is followed by a timed
    call of each of them, so all see the same load from other processes; their median and
    min come back as `<name>_ms` and `<name>_min_ms`.
    """
    references = references or {}
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        fn()
    for reference in references.values():
        for _ in range(warmup):
            reference()
    times = {name: [] for name in ("", *references)}
    for _ in range(repeats):
        for name, function in (("", fn), *references.items()):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    result = {}
    for name, values in times.items():
        prefix = f"{name}_" if name else ""
        result[f"{prefix}ms"] = 1e3 * statistics.median(values)
        result[f"{prefix}min_ms"] = 1e3 * min(values)
    result["first_call_ms"] = 1e3 * first
    return result


def make_input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# --------------------------------------------------------------------------- NumPy floor


def openblas_info():
    """Core type and thread count that NumPy's OpenBLAS picked (None if not found)."""
    try:
        import ctypes
        import glob

        libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*"))
        lib = ctypes.CDLL(libs[0])
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                name = f"{prefix}get_corename{suffix}"
                if hasattr(lib, name):
                    func = getattr(lib, name)
                    func.restype = ctypes.c_char_p
                    threads = getattr(lib, f"{prefix}get_num_threads{suffix}")()
                    return {"corename": func().decode(), "threads": threads}
    except Exception:  # diagnostics only
        pass
    return None


def numpy_nearest(flat, codebook):
    """The floor: float32 squared distances via one matmul, then argmin."""
    distances = (
        (flat * flat).sum(axis=1, keepdims=True)
        - 2.0 * (flat @ codebook.T)
        + (codebook * codebook).sum(axis=1)
    )
    return distances.argmin(axis=1)


def numpy_nearest_inplace(flat, codebook, buffer):
    """A tighter floor: the same search in one preallocated (N, K) buffer, ||x||^2 left out
    (it does not change the argmin). The plain floor allocates four (N, K) temporaries per
    call, and zeroing their fresh pages can take more time than the arithmetic."""
    np.matmul(flat, codebook.T, out=buffer)
    buffer *= -2.0
    buffer += (codebook * codebook).sum(axis=1)
    return buffer.argmin(axis=1)


def floor_functions(flat, codebook):
    """The two NumPy references for one batch of vectors, checked to agree."""
    buffer = np.empty((flat.shape[0], codebook.shape[0]), dtype=np.float32)
    assert (numpy_nearest(flat, codebook) == numpy_nearest_inplace(flat, codebook, buffer)).all()
    return {
        "floor": lambda: numpy_nearest(flat, codebook),
        "inplace_floor": lambda: numpy_nearest_inplace(flat, codebook, buffer),
    }


def run_numpy(args):
    codebook = make_input((NUM_EMBEDDINGS, EMBEDDING_DIM), seed=1)
    results = []
    for shape_name in args.shapes:
        flat = make_input(SHAPES[shape_name]).reshape(-1, EMBEDDING_DIM)
        floors = floor_functions(flat, codebook)
        timing = time_ms(floors["floor"], args.repeats, args.warmup)
        del timing["first_call_ms"]
        inplace = time_ms(floors["inplace_floor"], args.repeats, args.warmup)
        timing.update(inplace_ms=inplace["ms"], inplace_min_ms=inplace["min_ms"])
        results.append({"shape": shape_name, **timing})
        log(f"  numpy floor {shape_name}: {timing['ms']:.2f} ms, in place {inplace['ms']:.2f} ms")
    env = {name: os.environ.get(name) for name in OPENBLAS_VARS}
    return {"numpy": np.__version__, "openblas": openblas_info(), "env": env, "results": results}


# --------------------------------------------------------------------------- backends


def make_layer(quantizer_name):
    """The quantizer of `NUM_EMBEDDINGS` codes on `EMBEDDING_DIM` channels."""
    from vqkeras import layers

    if quantizer_name == "FiniteScalarQuantizer":
        return layers.FiniteScalarQuantizer((8, 8, 8), embedding_dim=EMBEDDING_DIM)
    if quantizer_name == "LookupFreeQuantizer":
        bits = NUM_EMBEDDINGS.bit_length() - 1
        return layers.LookupFreeQuantizer(bits, embedding_dim=EMBEDDING_DIM)
    if quantizer_name == "VectorQuantizer-options":
        # ViT-VQGAN's codes with every option on; k-means runs in the first,
        # untimed step, so the timed ones show what skipping it costs.
        return layers.VectorQuantizer(
            NUM_EMBEDDINGS,
            EMBEDDING_DIM,
            code_dim=8,
            normalize_codes=True,
            kmeans_init=True,
            gradient_estimator="rotation",
        )
    return getattr(layers, quantizer_name)(NUM_EMBEDDINGS, EMBEDDING_DIM)


def step_loss(layer, outputs, ops):
    """mean(quantized**2) plus the mean of every per-sample loss vector."""
    loss = ops.mean(ops.square(outputs["quantized"]))
    for name in layer.loss_names:
        loss = loss + ops.mean(outputs[name])
    return loss


def tensorflow_steps(layer, x_np, args):
    import tensorflow as tf
    from keras import ops

    x = tf.constant(x_np)
    layer.build(x.shape)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = step_loss(layer, layer(x, training=True), ops)
        return loss, tape.gradient(loss, [x, *layer.trainable_variables])

    for jit in (False, True):
        compiled = tf.function(step, jit_compile=jit)

        def run(compiled=compiled):
            # The embeddings' gradient is tf.IndexedSlices (from the gather): wait for its parts.
            for tensor in tf.nest.flatten(compiled(x), expand_composites=True):
                tensor.numpy()

        yield f"tf.function(jit_compile={jit})", run


def jax_steps(layer, x_np, args):
    import jax
    from keras import ops

    x = jax.numpy.asarray(x_np)
    layer.build(x.shape)
    trainable = [v.value for v in layer.trainable_variables]
    state = {"non_trainable": [v.value for v in layer.non_trainable_variables]}

    def loss_fn(trainable, non_trainable, x):
        outputs, non_trainable = layer.stateless_call(trainable, non_trainable, x, training=True)
        return step_loss(layer, outputs, ops), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)

    @jax.jit
    def step(trainable, non_trainable, x):
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x)
        return loss, grads, non_trainable

    def run():
        loss, grads, state["non_trainable"] = step(trainable, state["non_trainable"], x)
        jax.block_until_ready((loss, grads, state["non_trainable"]))

    yield "jax.jit(stateless_call)", run


def torch_steps(layer, x_np, args):
    import torch
    from keras import ops

    x = torch.from_numpy(x_np).requires_grad_(True)
    layer.build(tuple(x.shape))
    params = [v.value for v in layer.trainable_variables]

    def step(x):
        loss = step_loss(layer, layer(x, training=True), ops)
        return loss, torch.autograd.grad(loss, [x, *params])

    modes = [("eager", step)]
    if args.torch_compile:
        modes.append(("torch.compile", torch.compile(step)))
    for mode, fn in modes:

        def run(fn=fn):
            loss, grads = fn(x)
            loss.item()

        yield mode, run


def run_backend(args):
    os.environ["KERAS_BACKEND"] = args.backend
    start_worker(args.backend, args.threads)
    import keras

    steps = {"tensorflow": tensorflow_steps, "jax": jax_steps, "torch": torch_steps}[args.backend]
    codebook = make_input((NUM_EMBEDDINGS, EMBEDDING_DIM), seed=1)
    results = []
    for quantizer in args.quantizers:
        for shape_name in args.shapes:
            x_np = make_input(SHAPES[shape_name])
            floors = floor_functions(x_np.reshape(-1, EMBEDDING_DIM), codebook)
            for mode, run in steps(make_layer(quantizer), x_np, args):
                try:
                    timing = time_ms(run, args.repeats, args.warmup, references=floors)
                except Exception as error:  # report the failure and go on
                    log(f"  {quantizer} {shape_name} {mode}: FAILED {type(error).__name__}")
                    results.append(
                        {
                            "quantizer": quantizer,
                            "shape": shape_name,
                            "mode": mode,
                            "error": f"{type(error).__name__}: {str(error)[:300]}",
                        }
                    )
                    continue
                log(
                    f"  {quantizer} {shape_name} {mode}: {timing['ms']:.2f} ms, interleaved"
                    f" floor {timing['floor_ms']:.2f} ms, in-place floor"
                    f" {timing['inplace_floor_ms']:.2f} ms (first call {timing['first_call_ms']:.0f} ms)"
                )
                results.append(
                    {"quantizer": quantizer, "shape": shape_name, "mode": mode, **timing}
                )
    module = importlib.import_module(args.backend)
    info = {"keras": keras.__version__, args.backend: module.__version__}
    if args.backend == "torch":
        info["torch_threads"] = module.get_num_threads()
    return {**info, "results": results}


# --------------------------------------------------------------------------- driver


def spawn(worker, args, env):
    """Run this script for one backend (or the numpy floor) in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--backend",
            worker,
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
            "--shapes",
            *args.shapes,
            "--quantizers",
            *args.quantizers,
            "--json",
            path,
            "--worker",
        ]
        if args.torch_compile:
            command.append("--torch-compile")
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
            env = {**env, **thread_env(args.threads)}
        if worker in BACKENDS:
            env = {**env, "KERAS_BACKEND": worker}
        completed = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
        if completed.returncode != 0 or not os.path.exists(path):
            log(f"  {worker}: worker failed with exit code {completed.returncode}")
            return None
        with open(path) as file:
            return json.load(file)


def best_rows(backends):
    """The fastest mode of every (backend, quantizer, shape)."""
    best = {}
    for backend, report in backends.items():
        for row in (report or {}).get("results", []):
            if "ms" not in row:
                continue
            key = (backend, row["quantizer"], row["shape"])
            if key not in best or row["ms"] < best[key]["ms"]:
                best[key] = {"backend": backend, **row}
    return best


def shape_label(shape_name):
    shape = SHAPES[shape_name]
    vectors = 1
    for size in shape[:-1]:
        vectors *= size
    return f"{shape_name} {shape} = {vectors:,} vectors"


def markdown(report):
    given = report["numpy_floor"]["as_given"] or {"results": [], "env": {}}
    best = best_rows(report["backends"])
    env_text = ", ".join(f"{k}={v}" for k, v in given["env"].items() if v) or "neither set"
    versions = {"numpy": given.get("numpy")}
    for backend_report in report["backends"].values():
        versions.update({k: v for k, v in (backend_report or {}).items() if k != "results"})
    machine = report["machine"]
    lines = [
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}. "
        f"{machine['cpu_count']} CPUs, load average before {machine['load_before'][0]:.2f}, "
        f"after {machine['load_after'][0]:.2f}. Times: median of {report['repeats']} steps "
        f"after {report['warmup']} warm-up steps. Threads: "
        f"{report['threads'] or 'each library default'}. NumPy floor: timed alternately with the "
        f"step in the same process (same load), OpenBLAS environment as given ({env_text}); "
        "the ratio is step / floor. In-place floor: the same search in one preallocated "
        "buffer (no page zeroing of fresh temporaries), a tighter reference.",
        "",
        "| backend | quantizer | shape | mode | ms | NumPy floor ms | ratio "
        "| in-place floor ms | ratio to it |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (backend, quantizer, shape_name), row in best.items():
        lines.append(
            f"| {backend} | {quantizer} | {shape_label(shape_name)} | {row['mode']} "
            f"| {row['ms']:.2f} | {row['floor_ms']:.2f} | {row['ms'] / row['floor_ms']:.2f} "
            f"| {row['inplace_floor_ms']:.2f} | {row['ms'] / row['inplace_floor_ms']:.2f} |"
        )

    lines += [
        "",
        "All modes tried (ratio of medians; min over the repeats beside them):",
        "",
        "| backend | quantizer | shape | mode | ms | min ms | floor ms | floor min ms | ratio "
        "| in-place floor ms | first call ms |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, backend_report in report["backends"].items():
        if backend_report is None:
            lines.append(f"| {backend} | worker failed | | | | | | | | | |")
            continue
        for row in backend_report["results"]:
            head = f"| {backend} | {row['quantizer']} | {row['shape']} | {row['mode']} "
            if "ms" not in row:
                lines.append(head + f"| failed: {row['error'][:60]} | | | | | | |")
                continue
            lines.append(
                head + f"| {row['ms']:.2f} | {row['min_ms']:.2f} | {row['floor_ms']:.2f} "
                f"| {row['floor_min_ms']:.2f} | {row['ms'] / row['floor_ms']:.2f} "
                f"| {row['inplace_floor_ms']:.2f} | {row['first_call_ms']:.0f} |"
            )

    lines += [
        "",
        "NumPy floor alone (own process) by OpenBLAS environment:",
        "",
        "| environment | OpenBLAS core | shape | ms | min ms | in-place ms | in-place min ms |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for label, floor_report in report["numpy_floor"].items():
        if floor_report is None:
            lines.append(f"| {label} | worker failed | | | | | |")
            continue
        core = (floor_report.get("openblas") or {}).get("corename", "?")
        for row in floor_report["results"]:
            lines.append(
                f"| {label} | {core} | {row['shape']} | {row['ms']:.2f} | {row['min_ms']:.2f} "
                f"| {row['inplace_ms']:.2f} | {row['inplace_min_ms']:.2f} |"
            )

    if best:
        lines += ["", "Fastest backend per shape and quantizer (step time over the floor):", ""]
    for shape_name in report["shapes"]:
        for quantizer in QUANTIZERS:
            rows = [r for (_, q, s), r in best.items() if q == quantizer and s == shape_name]
            if not rows:
                continue
            fastest = min(rows, key=lambda r: r["ms"])
            ratio = fastest["ms"] / fastest["floor_ms"]
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            lines.append(
                f"- {shape_name}, {quantizer}: {fastest['backend']} ({fastest['mode']}) "
                f"{fastest['ms']:.2f} ms, {ratio:.2f}x the floor: {verdict} the "
                f"{TARGET_RATIO:g}x target ({fastest['ms'] / fastest['inplace_floor_ms']:.2f}x "
                "the in-place floor)"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "numpy"), help="run only this one")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, >= 1")
    parser.add_argument("--shapes", nargs="+", choices=tuple(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--quantizers", nargs="+", choices=QUANTIZERS, default=list(QUANTIZERS), metavar="NAME"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--torch-compile", action="store_true", help="also try torch.compile")
    parser.add_argument(
        "--threads",
        type=int,
        help="cap the threads of every library (default: each library's own choice); "
        "1 makes the figures far less sensitive to other processes on a busy machine",
    )
    parser.add_argument(
        "--floor-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also time the NumPy floor with this variable set, e.g. OPENBLAS_CORETYPE=Haswell",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        report = run_numpy(args) if args.backend == "numpy" else run_backend(args)
        with open(args.json, "w") as file:
            json.dump(report, file)
        return

    backends = [args.backend] if args.backend in BACKENDS else []
    if args.backend is None:
        backends = list(BACKENDS)
    load_before = os.getloadavg()
    log(f"load average before: {load_before}")
    report = {
        "shapes": args.shapes,
        "repeats": args.repeats,
        "threads": args.threads,
        "warmup": args.warmup,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
        },
        "numpy_floor": {},
        "backends": {},
    }
    log("numpy floor, OpenBLAS environment as given")
    report["numpy_floor"]["as_given"] = spawn("numpy", args, dict(os.environ))
    log("numpy floor, env -u " + " -u ".join(OPENBLAS_VARS))
    clean = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    report["numpy_floor"]["env -u OPENBLAS_*"] = spawn("numpy", args, clean)
    for setting in args.floor_env:
        name, _, value = setting.partition("=")
        log(f"numpy floor, {name}={value}")
        report["numpy_floor"][setting] = spawn("numpy", args, {**clean, name: value})
    for backend in backends:
        log(f"{backend}")
        report["backends"][backend] = spawn(backend, args, dict(os.environ))
    report["machine"]["load_after"] = os.getloadavg()
    log(f"load average after: {report['machine']['load_after']}")

    print(markdown(report))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
