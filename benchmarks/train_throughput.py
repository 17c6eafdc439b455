"""Training throughput of the zoo autoencoder recipes on every Keras backend, one device.

What it measures
----------------
For each recipe (`zoo/vqvae_mnist`, `zoo/vqvae_cifar10`, `zoo/vqgan_cifar10`), the
model and optimizer exactly as the recipe makes them
(`vqkeras.zoo.autoencoder_recipe.build_model` with the recipe's family options: the
"ema-vqvae" or "vqgan" family of `vqkeras.families`;
`vqkeras.training.compile_with_cosine_adam` with the recipe's learning rate and betas
and the family's final learning-rate fraction and group learning rates; not its
starting weights, which do not change the work), trained by `model.fit` (with the
family's callbacks) on
`--images` random uint8 images of the recipe's shape in batches of `--batch-size`
(the recipes' 128). Pixel values do not change the work of a step, so no dataset is
needed. The first epoch (tracing and compilation) is not counted; images per second is
the median over the next `--epochs` epochs of the images of an epoch over its
training time (from its start to the end of its last batch: `vqkeras.callbacks.EpochTimer`).

The cost of adversarial training: `vqgan_cifar10` is `vqvae_cifar10`'s model with a
patch discriminator (its own optimizer: two optimizer groups), the adaptive weight's
two extra gradients at the decoder's last kernel and a perceptual loss in the
`cifar10_classifier` preset's convolutions; `vqgan_cifar10-no-perceptual` the same
without the perceptual loss. Their column "x vqvae" is their step time over
`vqvae_cifar10`'s on the same backend in the same run (the issue's target: at most
2.5 for the two-optimizer step).

The quantizer's share: one forward and backward pass of the recipe's
`EMAVectorQuantizer` alone (codebook update included) on a batch of latents of the
shape the encoder gives, compiled as `fit` compiles the model (TensorFlow:
`tf.function` with the model's resolved `jit_compile`; JAX: `jax.jit`; PyTorch:
eager), as `benchmarks/quantizer.py` times it. Its median time over the median time
of a training step (batch time from the throughput) is the share. The quantizer is
timed apart from the model, so the share leaves out what the compiler could fuse
across its borders: read it as an estimate.

Against the fastest backend and the machine: "x fastest" is a backend's images
per second over the fastest backend's on the same recipe in the same run (issue
18's target: the slowest at 0.75 or more). The floating-point work of a training
step is counted once, by XLA's cost analysis of the JAX backend's compiled
`train_step` (in its own JAX process, whichever backends run; a multiply-add
counts 2), divided by the batch: GFLOP per image. GFLOP/s is that work times
images per second. Beside it, each backend's own float32 1024x1024 matrix
product through `keras.ops`, timed in the same process (`matmul GFLOP/s`): the
practical ceiling of the machine for that library.

How to run
----------
    python benchmarks/train_throughput.py                    # all backends, both VQ-VAEs
    python benchmarks/train_throughput.py --recipes vqvae_cifar10 vqgan_cifar10 \
        vqgan_cifar10-no-perceptual                          # the cost of the discriminator
    python benchmarks/train_throughput.py --backend jax --recipes vqvae_mnist
    python benchmarks/train_throughput.py --images 2560 --epochs 3 --json results.json
    python benchmarks/train_throughput.py --threads 1        # steadier on a busy machine

Each backend runs in its own process. A Markdown table goes to stdout, progress to
stderr, with the load average before and after: other processes slow every figure.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from worker_setup import log, matmul_gflops, median_ms, start_worker, thread_env

BACKENDS = ("tensorflow", "jax", "torch")
RECIPES = (
    "vqvae_mnist",
    "vqvae_cifar10",
    "vqgan_cifar10",
    "vqgan_cifar10-no-perceptual",
)
# Recipes changed for the benchmark: name -> (zoo recipe, changed family options).
VARIANTS = {"vqgan_cifar10-no-perceptual": ("vqgan_cifar10", {"perceptual_features": None})}
# Each adversarial recipe's step is compared with this recipe's.
ADVERSARIAL_REFERENCE = "vqvae_cifar10"


def quantizer_step(quantizer, latents, jit_compile):
    """One compiled forward+backward of `quantizer` on `latents`, as a callable that
    waits for its results."""
    import keras
    from keras import ops

    def loss_of(outputs):
        loss = ops.mean(ops.square(outputs["quantized"]))
        for name in quantizer.loss_names:
            loss = loss + ops.mean(outputs[name])
        return loss

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(latents)

        @tf.function(jit_compile=jit_compile)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_of(quantizer(x, training=True))
            return loss, tape.gradient(loss, x)

        return lambda: [t.numpy() for t in step(x)]
    if backend == "jax":
        import jax

        x = jax.numpy.asarray(latents)
        state = {"non_trainable": [v.value for v in quantizer.non_trainable_variables]}

        def loss_fn(x, non_trainable):
            outputs, non_trainable = quantizer.stateless_call([], non_trainable, x, training=True)
            return loss_of(outputs), non_trainable

        step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

        def run():
            (loss, state["non_trainable"]), grad = step(x, state["non_trainable"])
            jax.block_until_ready((loss, grad, state["non_trainable"]))

        return run
    import torch

    x = torch.from_numpy(latents).requires_grad_(True)

    def run():
        loss = loss_of(quantizer(x, training=True))
        torch.autograd.grad(loss, [x])[0].sum().item()

    return run


def build_recipe_model(name, args, epochs, steps_per_epoch):
    """The recipe (its options changed as `VARIANTS` says), the family's
    options and callbacks, and the model, compiled as the recipe compiles it
    for a run of `epochs` epochs of `steps_per_epoch` steps."""
    import dataclasses
    import importlib

    import keras

    from vqkeras.families import get_family
    from vqkeras.training import compile_with_cosine_adam
    from vqkeras.zoo import autoencoder_recipe

    zoo_name, changes = VARIANTS.get(name, (name, {}))
    recipe = importlib.import_module(f"vqkeras.zoo.{zoo_name}.recipe").RECIPE
    recipe = dataclasses.replace(recipe, init_from=None, options={**recipe.options, **changes})
    family = get_family(recipe.family, kind="autoencoder")
    options = family.resolve(family.options(recipe.options), epochs=epochs)
    keras.utils.set_random_seed(args.seed)
    model = autoencoder_recipe.build_model(recipe, options, args.seed)
    compile_with_cosine_adam(
        model,
        epochs * steps_per_epoch,
        learning_rate=recipe.learning_rate,
        final_fraction=family.final_learning_rate_fraction,
        betas=recipe.betas,
        group_learning_rates=family.group_learning_rates(options),
    )
    return recipe, options, family.callbacks(options, steps_per_epoch=steps_per_epoch), model


def jax_train_step(name, args):
    """The JAX backend's `train_step` of `name`'s model, jitted, with the state
    and the batch of `args.batch_size` images (zeros) it takes (JAX backend only)."""
    import jax

    recipe, _, callbacks, model = build_recipe_model(name, args, epochs=1, steps_per_epoch=1)
    images = np.zeros((args.batch_size, *recipe.image_shape), np.uint8)
    # Builds every state.
    model.fit(images, batch_size=args.batch_size, epochs=1, callbacks=callbacks, verbose=0)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    return jax.jit(model.train_step), state, (jax.numpy.asarray(images),)


def training_flops_per_image(name, args):
    """Floating-point operations of one training step of `name`'s model per
    image, by XLA's cost analysis of the JAX backend's compiled `train_step`
    on a batch of `args.batch_size` images (JAX backend only)."""
    step, state, data = jax_train_step(name, args)
    costs = step.lower(state, data).compile().cost_analysis()
    costs = costs[0] if isinstance(costs, list) else costs  # older jax: one dict per device
    flops = costs["flops"] / args.batch_size
    log(f"  {name}: {flops / 1e6:.1f} MFLOP per image per training step (XLA cost analysis)")
    return flops


def run_recipe(name, args):
    from vqkeras.callbacks import EpochTimer
    from vqkeras.layers import EMAVectorQuantizer

    steps = -(-args.images // args.batch_size)
    recipe, options, callbacks, model = build_recipe_model(
        name, args, epochs=1 + args.epochs, steps_per_epoch=steps
    )
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.images, *recipe.image_shape), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        timer = EpochTimer(os.path.join(tmp, "timing.json"), args.images, resume=False)
        model.fit(
            images,
            batch_size=args.batch_size,
            epochs=1 + args.epochs,
            callbacks=[timer, *callbacks],
            verbose=0,
        )
    seconds = [entry["train_time_s"] for entry in timer.epochs.values()]
    epoch_s = statistics.median(seconds[1:])
    images_per_second = args.images / epoch_s
    step_ms = 1e3 * epoch_s / steps

    latent_shape = model.encoder.compute_output_shape((args.batch_size, *recipe.image_shape))
    latents = rng.standard_normal(latent_shape, dtype=np.float32)
    quantizer = EMAVectorQuantizer.from_config(model.quantizer.get_config())
    quantizer.build(latent_shape)
    quantizer_ms = median_ms(
        quantizer_step(quantizer, latents, bool(model.jit_compile)), args.repeats, warmup=2
    )
    result = {
        "recipe": name,
        "image_shape": list(recipe.image_shape),
        "latent_shape": list(latent_shape),
        "num_embeddings": options.num_embeddings,
        "parameters": model.count_params(),
        "jit_compile": bool(model.jit_compile),
        "first_epoch_s": seconds[0],
        "epoch_s": seconds[1:],
        "images_per_second": images_per_second,
        "step_ms": step_ms,
        "quantizer_ms": quantizer_ms,
        "quantizer_share": quantizer_ms / step_ms,
    }
    log(
        f"  {name}: {images_per_second:.0f} images/s, step {step_ms:.1f} ms, quantizer "
        f"{quantizer_ms:.1f} ms ({result['quantizer_share']:.0%})"
    )
    return result


def run_backend(args):
    start_worker(args.backend, args.threads)
    import importlib

    import keras

    if args.count_flops:
        return {name: training_flops_per_image(name, args) for name in args.recipes}
    module = importlib.import_module(args.backend)
    results = [run_recipe(name, args) for name in args.recipes]
    gflops = matmul_gflops()
    log(f"  float32 1024x1024 matmul: {gflops:.1f} GFLOP/s")
    return {
        "keras": keras.__version__,
        args.backend: module.__version__,
        "matmul_gflops": gflops,
        "results": results,
    }


def spawn(backend, args, count_flops=False):
    """Runs this script for one backend in a fresh process (with `count_flops`,
    only to count each recipe's training FLOPs); its report, or None."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--json", path]
        command += ["--backend", backend, "--recipes", *args.recipes]
        if count_flops:
            command.append("--count-flops")
        for option in ("images", "batch_size", "epochs", "repeats", "seed", "threads"):
            value = getattr(args, option)
            if value is not None:
                command += [f"--{option.replace('_', '-')}", str(value)]
        env = {**os.environ, **thread_env(args.threads), "KERAS_BACKEND": backend}
        completed = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
        if completed.returncode != 0 or not os.path.exists(path):
            log(f"  {backend}: worker failed with exit code {completed.returncode}")
            return None
        with open(path) as file:
            return json.load(file)


def markdown(report):
    machine = report["machine"]
    lines = [
        f"{machine['cpu_count']} CPUs, load average (1 min) before "
        f"{machine['load_before'][0]:.2f}, after {machine['load_after'][0]:.2f}. "
        f"{report['images']} images per epoch, batch {report['batch_size']}, median of "
        f"{report['epochs']} epochs after a first one (tracing) not counted; threads: "
        f"{report['threads'] or 'each library default'}.",
        "",
        "| backend | recipe | images/s | x fastest | GFLOP/s | matmul GFLOP/s | step ms "
        "| x vqvae | quantizer ms | quantizer share | first epoch s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fastest = {}
    for backend_report in filter(None, report["backends"].values()):
        for row in backend_report["results"]:
            name = row["recipe"]
            fastest[name] = max(fastest.get(name, 0.0), row["images_per_second"])
    flops = report.get("flops_per_image") or {}
    for backend, backend_report in report["backends"].items():
        if backend_report is None:
            lines.append(f"| {backend} | worker failed |" + " |" * 10)
            continue
        steps = {row["recipe"]: row["step_ms"] for row in backend_report["results"]}
        for row in backend_report["results"]:
            name = row["recipe"]
            ratio = ""
            if name.startswith("vqgan") and ADVERSARIAL_REFERENCE in steps:
                ratio = f"{row['step_ms'] / steps[ADVERSARIAL_REFERENCE]:.2f}"
            gflops = f"{flops[name] * row['images_per_second'] / 1e9:.1f}" if name in flops else ""
            lines.append(
                f"| {backend} | {name} | {row['images_per_second']:.0f} "
                f"| {row['images_per_second'] / fastest[name]:.2f} | {gflops} "
                f"| {backend_report['matmul_gflops']:.0f} | {row['step_ms']:.1f} | {ratio} "
                f"| {row['quantizer_ms']:.1f} | {row['quantizer_share']:.0%} "
                f"| {row['first_epoch_s']:.1f} |"
            )
    if flops:
        lines += [
            "",
            "Training FLOPs per image (XLA cost analysis of the JAX train step): "
            + ", ".join(f"{name} {value / 1e6:.1f} MFLOP" for name, value in flops.items())
            + ".",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="run only this one")
    parser.add_argument(
        "--recipes", nargs="+", choices=RECIPES, default=["vqvae_mnist", "vqvae_cifar10"]
    )
    parser.add_argument("--images", type=int, default=2560, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=128, help="(the recipes' 128)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one untimed")
    parser.add_argument("--repeats", type=int, default=10, help="timed quantizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="cap every library's threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "epochs", "repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")

    if args.worker:
        with open(args.json, "w") as file:
            json.dump(run_backend(args), file)
        return

    report = {
        "images": args.images,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_before": os.getloadavg(),
        },
        "backends": {},
    }
    log(f"load average before: {report['machine']['load_before']}")
    log("counting the training FLOPs (JAX)")
    report["flops_per_image"] = spawn("jax", args, count_flops=True)
    for backend in [args.backend] if args.backend else BACKENDS:
        log(backend)
        report["backends"][backend] = spawn(backend, args)
    report["machine"]["load_after"] = os.getloadavg()
    log(f"load average after: {report['machine']['load_after']}")
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
