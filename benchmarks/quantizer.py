"""Forward+backward time of the vqkeras quantizers on every Keras backend.

What it measures
----------------
One training step of `VectorQuantizer(512, 64)` and `EMAVectorQuantizer(512, 64)`,
called as `layer(x, training=True)`, for two input shapes:

- small: x of shape (64, 8, 8, 64), i.e. 4,096 vectors of D=64, K=512 codes;
- large: x of shape (256, 32, 32, 64), i.e. 262,144 vectors.

A step computes `loss = mean(quantized**2) + sum of the means of the per-sample loss
vectors` ("commitment_loss", plus "codebook_loss" for VectorQuantizer) and its gradients
with respect to the input and the trainable weights (the EMA quantizer has none; its
codebook update runs in the forward pass). Each backend compiles the step where it can:

- tensorflow: `tf.function` with `GradientTape`, timed with `jit_compile=False` and
  `jit_compile=True`; the faster is kept (both are listed);
- jax: `jax.jit` of a stateless step, `layer.stateless_call` under
  `jax.value_and_grad`, the updated non-trainable state fed back every step;
- torch: eager `torch.autograd.grad` (`--torch-compile` adds a `torch.compile` try).

Every timing is the median of `--repeats` steps after `--warmup` untimed ones (the
first of which compiles), each step waited for until its results are ready.

Beside it, the NumPy floor: the float32 distances ||x||^2 - 2 x.e + ||e||^2 (one matmul)
and their argmin for the same shapes, i.e. the nearest-code search alone, forward only.
The ratio is quantizer step time / floor. The target of the issue: within 3x of the floor
on the fastest backend. The floor is measured with the OpenBLAS environment as given
(this is the one the ratios use) and once more with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE removed, like `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`, since
a forced core type can slow NumPy down.

How to run
----------
    python benchmarks/quantizer.py                     # all backends, one process each
    python benchmarks/quantizer.py --backend jax       # one backend (or numpy: the floor)
    python benchmarks/quantizer.py --repeats 3 --shapes small --json results.json

The Markdown tables go to stdout, progress to stderr. The machine should be otherwise
idle: the script prints the load average before and after.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
SHAPES = {
    "small": (64, 8, 8, 64),
    "large": (256, 32, 32, 64),
}
NUM_EMBEDDINGS = 512
EMBEDDING_DIM = 64
QUANTIZERS = ("VectorQuantizer", "EMAVectorQuantizer")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TARGET_RATIO = 3.0


def log(message):
    print(message, file=sys.stderr, flush=True)


def median_ms(fn, repeats, warmup):
    """Median wall time of `fn()` in ms after `warmup` untimed calls; also the first call's."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * first


def make_input(shape, seed=0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# --------------------------------------------------------------------------- NumPy floor


def openblas_info():
    """Core type and thread count that NumPy's OpenBLAS picked (None if not found)."""
    try:
        import ctypes
        import glob

        import numpy as np

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
    except Exception:  # noqa: BLE001 - diagnostics only
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


def run_numpy(args):
    import numpy as np

    codebook = make_input((NUM_EMBEDDINGS, EMBEDDING_DIM), seed=1)
    results = []
    for shape_name in args.shapes:
        flat = make_input(SHAPES[shape_name]).reshape(-1, EMBEDDING_DIM)
        assert numpy_nearest(flat, codebook).dtype.kind == "i"
        ms, _ = median_ms(lambda f=flat: numpy_nearest(f, codebook), args.repeats, args.warmup)
        results.append({"shape": shape_name, "ms": ms})
        log(f"  numpy floor {shape_name}: {ms:.2f} ms")
    env = {name: os.environ.get(name) for name in OPENBLAS_VARS}
    return {"numpy": np.__version__, "openblas": openblas_info(), "env": env, "results": results}


# --------------------------------------------------------------------------- backends


def make_layer(quantizer_name):
    from vqkeras.layers import EMAVectorQuantizer, VectorQuantizer

    cls = {"VectorQuantizer": VectorQuantizer, "EMAVectorQuantizer": EMAVectorQuantizer}
    return cls[quantizer_name](NUM_EMBEDDINGS, EMBEDDING_DIM)


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
    import keras

    if keras.config.backend() != args.backend:
        raise SystemExit(
            f"keras was imported with backend {keras.config.backend()!r}, not {args.backend!r}"
        )
    steps = {"tensorflow": tensorflow_steps, "jax": jax_steps, "torch": torch_steps}[args.backend]
    results = []
    for quantizer in QUANTIZERS:
        for shape_name in args.shapes:
            x_np = make_input(SHAPES[shape_name])
            keras.utils.set_random_seed(0)
            for mode, run in steps(make_layer(quantizer), x_np, args):
                try:
                    ms, first_ms = median_ms(run, args.repeats, args.warmup)
                except Exception as error:  # noqa: BLE001 - report and go on
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
                    f"  {quantizer} {shape_name} {mode}: {ms:.2f} ms (first call {first_ms:.0f} ms)"
                )
                results.append(
                    {
                        "quantizer": quantizer,
                        "shape": shape_name,
                        "mode": mode,
                        "ms": ms,
                        "first_call_ms": first_ms,
                    }
                )
    return {"keras": keras.__version__, "results": results}


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
            "--json",
            path,
            "--worker",
        ]
        if args.torch_compile:
            command.append("--torch-compile")
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
    floors = {row["shape"]: row["ms"] for row in report["numpy_floor"]["as_given"]["results"]}
    best = best_rows(report["backends"])
    given_env = report["numpy_floor"]["as_given"]["env"]
    env_text = ", ".join(f"{k}={v}" for k, v in given_env.items() if v) or "neither set"
    lines = [
        f"NumPy floor measured with the OpenBLAS environment as given ({env_text}).",
        "",
        "| backend | quantizer | shape | mode | ms | NumPy floor ms | ratio |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for (backend, quantizer, shape_name), row in best.items():
        floor = floors.get(shape_name)
        ratio = f"{row['ms'] / floor:.2f}" if floor else "n/a"
        floor_text = f"{floor:.2f}" if floor else "n/a"
        lines.append(
            f"| {backend} | {quantizer} | {shape_label(shape_name)} | {row['mode']} "
            f"| {row['ms']:.2f} | {floor_text} | {ratio} |"
        )

    lines += [
        "",
        "All modes tried:",
        "",
        "| backend | quantizer | shape | mode | ms | first call ms |",
        "|---|---|---|---|---:|---:|",
    ]
    for backend, backend_report in report["backends"].items():
        if backend_report is None:
            lines.append(f"| {backend} | worker failed | | | | |")
            continue
        for row in backend_report["results"]:
            ms = f"{row['ms']:.2f}" if "ms" in row else f"failed: {row['error'][:60]}"
            first = f"{row['first_call_ms']:.0f}" if "ms" in row else ""
            lines.append(
                f"| {backend} | {row['quantizer']} | {row['shape']} | {row['mode']} "
                f"| {ms} | {first} |"
            )

    lines += [
        "",
        "NumPy floor by OpenBLAS environment:",
        "",
        "| environment | OpenBLAS core | shape | ms |",
        "|---|---|---|---:|",
    ]
    for label, floor_report in report["numpy_floor"].items():
        if floor_report is None:
            continue
        core = (floor_report.get("openblas") or {}).get("corename", "?")
        for row in floor_report["results"]:
            lines.append(f"| {label} | {core} | {row['shape']} | {row['ms']:.2f} |")

    lines += ["", "Fastest backend per shape (best quantizer step over the floor):", ""]
    for shape_name in report["shapes"]:
        for quantizer in QUANTIZERS:
            rows = [r for (b, q, s), r in best.items() if q == quantizer and s == shape_name]
            if not rows or shape_name not in floors:
                continue
            fastest = min(rows, key=lambda r: r["ms"])
            ratio = fastest["ms"] / floors[shape_name]
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            lines.append(
                f"- {shape_name}, {quantizer}: {fastest['backend']} ({fastest['mode']}) "
                f"{fastest['ms']:.2f} ms, {ratio:.2f}x the floor: {verdict} the "
                f"{TARGET_RATIO:g}x target"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "numpy"), help="run only this one")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, >= 1")
    parser.add_argument("--shapes", nargs="+", choices=tuple(SHAPES), default=list(SHAPES))
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--torch-compile", action="store_true", help="also try torch.compile")
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
