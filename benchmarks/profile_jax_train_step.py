"""Where the JAX backend's training step of a zoo VQ-VAE recipe spends its time, per XLA operation.

What it measures
----------------
The recipe's model and optimizer as `benchmarks/train_throughput.py` builds them,
its `train_step` jitted on a batch of `--batch-size` images, run `--steps` times
under `jax.profiler.trace` after a warm-up step. The trace's events are XLA's
executed instructions (fusions and single operations) by name; the compiled
module's HLO text says what each one computes. Each is put in one kind by what
its fused computation holds:

- convolution: holds a convolution (forward, or a gradient that XLA computes
  as one);
- matrix product: holds a dot;
- reduction or scatter: a reduce, reduce-window, scatter or select-and-scatter;
- layout change: holds a transpose or a copy (XLA's changes of a tensor's
  layout, around the convolutions and in the depth-to-space of the
  upsampling), with any arithmetic fused into it (a bias, a ReLU), or only
  pads, slices, concatenations, reshapes and broadcasts;
- elementwise: the rest (activations, the optimizer's update, losses).

It prints the wall time of a step (median, outside the profiler), the time in
XLA's instructions per step by kind, and the `--top` slowest instructions with
their output shape and the Keras operation XLA names them after (`transpose(...)`
in that name marks the backward pass; a kernel's gradient computed as a
convolution often has no name). Times are summed over the threads that
ran them, so on two threads they can add up to more than the wall time.

How to run
----------
    KERAS_BACKEND=jax python benchmarks/profile_jax_train_step.py --recipe vqvae_cifar10
    KERAS_BACKEND=jax python benchmarks/profile_jax_train_step.py --recipe vqvae_mnist \\
        --threads 1 --top 30

A Markdown report goes to stdout, progress to stderr.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

from worker_setup import log, thread_env

RECIPES = ("vqvae_mnist", "vqvae_cifar10")
LAYOUT = {"transpose", "copy"}
DATA_MOVEMENT = {
    "parameter",
    "constant",
    "bitcast",
    "reshape",
    "pad",
    "slice",
    "dynamic-slice",
    "dynamic-update-slice",
    "concatenate",
    "broadcast",
    "reverse",
}
REDUCTIONS = {"reduce", "reduce-window", "scatter", "select-and-scatter"}
# name = shape opcode(operands), ..., calls=%computation, metadata={op_name="..."}
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")
COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
OP_NAME = re.compile(r'op_name="([^"]+)"')


def parse_hlo(text):
    """{instruction name: (kind, output shape, Keras operation)} for the
    instructions of the compiled module `text`."""
    computations = {}  # name -> [(opcode, op_name)]
    instructions = []  # (name, shape, opcode, called computation, op_name)
    current = None
    for line in text.splitlines():
        match = COMPUTATION.match(line)
        if match:
            current = computations.setdefault(match.group(1), [])
            continue
        match = INSTRUCTION.match(line)
        if match and current is not None:
            name, shape, opcode = match.groups()
            called = CALLS.search(line)
            op_name = OP_NAME.search(line)
            op_name = op_name.group(1) if op_name else ""
            current.append((opcode, op_name))
            instructions.append((name, shape, opcode, called and called.group(1), op_name))
    table = {}
    for name, shape, opcode, called, op_name in instructions:
        inner = computations.get(called, []) if opcode == "fusion" else [(opcode, op_name)]
        opcodes = {inner_opcode for inner_opcode, _ in inner}
        op_name = op_name or next((inner_name for _, inner_name in inner if inner_name), "")
        table[name] = (kind_of(opcodes), shape.split("{")[0], op_name)
    return table


def kind_of(opcodes):
    if "convolution" in opcodes:
        return "convolution"
    if "dot" in opcodes:
        return "matrix product"
    if opcodes & REDUCTIONS:
        return "reduction or scatter"
    if opcodes & LAYOUT or opcodes <= DATA_MOVEMENT:
        return "layout change"
    return "elementwise"


def traced_durations(trace_dir, table):
    """{instruction name: total microseconds} over the trace in `trace_dir`."""
    (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as file:
        events = json.load(file)
    events = events["traceEvents"] if isinstance(events, dict) else events
    durations = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in table:
            durations[event["name"]] += event.get("dur", 0)
    return durations


def profile(args):
    import jax
    import keras
    from train_throughput import jax_train_step

    if keras.config.backend() != "jax":
        raise SystemExit(f"run with KERAS_BACKEND=jax, not {keras.config.backend()!r}")
    step, state, data = jax_train_step(args.recipe, args)
    table = parse_hlo(step.lower(state, data).compile().as_text())
    jax.block_until_ready(step(state, data))
    wall = []
    for _ in range(args.steps):
        start = time.perf_counter()
        jax.block_until_ready(step(state, data))
        wall.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                jax.block_until_ready(step(state, data))
        durations = traced_durations(trace_dir, table)
    if not durations:
        raise SystemExit("the trace holds none of the compiled module's instructions")
    return 1e3 * statistics.median(wall), table, durations


def markdown(args, wall_ms, table, durations):
    import jax

    per_step = {name: us / 1e3 / args.steps for name, us in durations.items()}
    total = sum(per_step.values())
    by_kind = collections.Counter()
    for name, ms in per_step.items():
        by_kind[table[name][0]] += ms
    lines = [
        f"{args.recipe}, JAX {jax.__version__}, batch {args.batch_size}, "
        f"threads: {args.threads or 'default'}; load average (1 min) {os.getloadavg()[0]:.2f}.",
        f"Step: {wall_ms:.1f} ms wall (median of {args.steps}); "
        f"{total:.1f} ms in XLA instructions (summed over threads).",
        "",
        "| kind | ms per step | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {kind} | {ms:.1f} | {ms / total:.0%} |" for kind, ms in by_kind.most_common()]
    lines += [
        "",
        "| instruction | kind | output | ms per step | Keras operation |",
        "|---|---|---|---:|---|",
    ]
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[: args.top]:
        kind, shape, op_name = table[name]
        op_name = op_name.removeprefix("jit(train_step)/") or "-"
        lines.append(f"| `{name}` | {kind} | `{shape}` | {ms:.1f} | {op_name} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=RECIPES, default="vqvae_cifar10")
    parser.add_argument("--batch-size", type=int, default=128, help="(the recipes' 128)")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps, after one warm-up")
    parser.add_argument("--top", type=int, default=15, help="slowest instructions listed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="cap XLA's and BLAS's threads")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "top", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    # The thread caps must be in the environment before XLA starts.
    os.environ.update(thread_env(args.threads))
    os.environ.setdefault("KERAS_BACKEND", "jax")
    log(f"profiling {args.recipe}")
    print(markdown(args, *profile(args)))


if __name__ == "__main__":
    sys.exit(main())
