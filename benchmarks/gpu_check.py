"""GPU check: the zoo's figures and the library's main paths on one backend's device.

What it checks
--------------
On the Keras backend of `KERAS_BACKEND` (JAX or PyTorch on a CUDA machine; any
backend on a CPU), with whatever device that backend picks:

1. Evaluation. `vqvae_mnist` and `vqvae_cifar10` reconstruct the test images
   (mean per-image PSNR of clipped reconstructions, as
   `vqkeras.evaluation.evaluate_reconstructions` measures it), and
   `pixelcnn_vqvae_mnist` and `transformer_vqvae_mnist` give the NLL of the
   test images' `vqvae_mnist` codes with their labels
   (`vqkeras.evaluation.evaluate_prior`). Each figure must match the CPU figure
   of the preset's card: PSNR to 0.05 dB, NLL to 0.01 nats per code.
   - With `--mnist` / `--cifar10` (keras.datasets-layout .npz files), on the
     whole test split against the card's `metrics` (measured on CPU; for
     CIFAR-10 on the JPEG-derived copy of the dataset that the zoo was trained
     and measured on: the canonical files give other figures).
   - Without them, on the 256 images of `vqkeras.samples` against the card's
     `sample_check` (measured on CPU when the preset was saved and held by the
     test suite on every backend). Those figures are rounded to 2 (PSNR) and 4
     (NLL) decimals, so the tolerances grow by half a unit of the last one.
2. Training. The `vqvae_mnist` recipe's model and optimizer, as
   `zoo/autoencoder_recipe.py` builds and compiles them (fresh weights, the
   family's callbacks), trained by `model.fit` for a fixed number of steps of
   batch 128 on the training images (the npz's train split, or the MNIST sample
   repeated). Checks: every step's loss is finite and the last step's is below
   the first's. Throughput: images per second after the first step (which
   traces and compiles).
3. Sampling. 10 class-conditional code grids per class from
   `pixelcnn_vqvae_mnist` and `transformer_vqvae_mnist` (seed 0), decoded by
   `vqvae_mnist` and classified by `mnist_classifier`
   (`vqkeras.evaluation.conditional_sample_agreement`). Each backend draws other
   samples, so the check is a floor: the card's agreement (1000 samples, CPU)
   minus 4 binomial standard deviations of this many samples. Throughput: grids
   per second of a second call of `prior.sample` (the first traces).
4. Compression. The first 256 MNIST sample images with their labels,
   compressed and decompressed by `vqkeras.compression.Codec("vqvae_mnist",
   "pixelcnn_vqvae_mnist")` on this backend (a file decodes on the backend that
   wrote it). Check: the decoded codes and labels equal the encoded ones.
   Reported: bits per image, and images per second each way.

`--quick` cuts the training (5 steps), the sampling (2 grids per class) and the
compression (64 images) so that a CPU runs the whole check in about two
minutes per backend; the evaluation keeps its sizes, which its references need.
`--require-gpu` adds a check that the backend computes on a GPU (JAX and
PyTorch fall back to the CPU silently when they find no CUDA).
`--highest-precision` turns off TF32 for float32 matrix products and
convolutions (JAX: `jax_default_matmul_precision=highest`; PyTorch:
`torch.backends.{cuda.matmul,cudnn}.allow_tf32 = False`); by default each
library computes as it does for a user.

How to run
----------
    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out gpu_jax.json
    KERAS_BACKEND=torch python benchmarks/gpu_check.py --mnist mnist.npz \\
        --cifar10 cifar10.npz --out gpu_torch.json
    KERAS_BACKEND=torch python benchmarks/gpu_check.py --quick    # CPU smoke run

It prints one JSON summary to stdout (progress goes to stderr), writes it to
`--out` if given, and exits 1 if any check fails. Each check gives its figure,
its reference and its tolerance. It imports TensorFlow only on the TensorFlow
backend: the CUDA machine it is meant for has JAX and PyTorch but no
TensorFlow, and on the other backends the check keeps an installed TensorFlow
out, so that a CPU run fails where the CUDA machine would.
benchmarks/README.md ("GPU check") says how to run it on the device machine.
"""

import argparse
import dataclasses
import importlib
import json
import math
import os
import pathlib
import platform
import sys
import time

# Run from a copy of the repository without installing: its root holds vqkeras.
ROOT = pathlib.Path(__file__).resolve().parents[1]
if (ROOT / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

# The CUDA machine has no TensorFlow. Keep it out on the other backends here
# too (Keras imports it where it can, e.g. to seed it), so that a run on a
# machine that has it shows that the check needs none.
if keras.config.backend() != "tensorflow":
    sys.modules.setdefault("tensorflow", None)

PSNR_TOLERANCE_DB = 0.05
NLL_TOLERANCE_NATS = 0.01
# The `sample_check` figures are rounded to these many decimals.
SAMPLE_CHECK_DECIMALS = {"psnr_db": 2, "nll_nats_per_code": 4}
TRAIN_BATCH_SIZE = 128
SEED = 0

SIZES = {
    # mode -> training steps, sampled grids per class, compressed images
    "default": {"train_steps": 200, "samples_per_class": 10, "compress_images": 256},
    "quick": {"train_steps": 5, "samples_per_class": 2, "compress_images": 64},
}


def log(message):
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Report:
    """The checks and throughputs gathered so far."""

    checks: list = dataclasses.field(default_factory=list)
    throughput: dict = dataclasses.field(default_factory=dict)

    def check(self, name, value, reference, tolerance=None, kind="close", note=None):
        """Records a check: `kind` "close" (|value - reference| <= tolerance),
        "at_least" (value >= reference), "below" (value < reference) or
        "equal" (value == reference)."""
        passed = {
            "close": lambda: abs(value - reference) <= tolerance,
            "at_least": lambda: value >= reference,
            "below": lambda: value < reference,
            "equal": lambda: value == reference,
        }[kind]()
        entry = {
            "name": name,
            "passed": bool(passed),
            "value": value,
            "kind": kind,
            "reference": reference,
        }
        if tolerance is not None:
            entry["tolerance"] = tolerance
        if note:
            entry["note"] = note
        self.checks.append(entry)
        log(
            f"  {'ok  ' if passed else 'FAIL'} {name}: {value} ({kind} {reference}"
            + (f" ± {tolerance:g})" if tolerance is not None else ")")
        )


def device_description(highest_precision):
    """The device the backend computes on, and whether it is a GPU."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        if highest_precision:
            jax.config.update("jax_default_matmul_precision", "highest")
        device = jax.devices()[0]
        return {"platform": device.platform, "name": device.device_kind}, device.platform == "gpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            if highest_precision:
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
            return {"platform": "cuda", "name": torch.cuda.get_device_name(0)}, True
        return {"platform": "cpu", "name": platform.processor() or platform.machine()}, False
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"platform": "gpu" if gpus else "cpu", "name": [g.name for g in gpus]}, bool(gpus)


def load_test_split(path, image_shape):
    """`(images, labels)` of the test split of a keras.datasets-layout .npz."""
    with np.load(path, allow_pickle=False) as data:
        images, labels = data["x_test"], data["y_test"]
    return images.reshape((len(images), *image_shape)), labels.reshape(-1).astype("int64")


def load_train_images(path, image_shape, count):
    with np.load(path, allow_pickle=False) as data:
        images = data["x_train"][:count]
    return images.reshape((len(images), *image_shape))


def reference_of(preset, metric, full_split):
    """The CPU figure of `preset`'s card for `metric`, with its tolerance and
    where it comes from."""
    from vqkeras.presets import load_metadata

    card = load_metadata(preset)
    tolerance = {"psnr_db": PSNR_TOLERANCE_DB, "nll_nats_per_code": NLL_TOLERANCE_NATS}[metric]
    if full_split:
        return card["metrics"][metric], tolerance, f"card metrics.{metric} ({card['evaluation']})"
    rounding = 0.5 * 10.0 ** -SAMPLE_CHECK_DECIMALS[metric]
    reference = card["sample_check"][metric]
    note = f"card sample_check.{metric} (rounded: tolerance {tolerance:g} + {rounding:g})"
    return reference, round(tolerance + rounding, 6), note


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def mean_psnr_db(model, images):
    """Mean per-image PSNR of `model`'s clipped reconstructions, as
    `evaluate_reconstructions` gives it, without its SSIM (which needs TensorFlow)."""
    from vqkeras import evaluation, validation

    model.check_images(images)
    reconstructions = model.predict(images, batch_size=evaluation.EVALUATION_BATCH_SIZE, verbose=0)
    reconstructions = np.clip(keras.ops.convert_to_numpy(reconstructions), 0.0, 1.0)
    mse = np.mean(np.square(reconstructions - validation.to_unit_range(images)), axis=(1, 2, 3))
    return float(np.mean(evaluation.psnr_db(mse)))


def check_evaluation(report, data):
    import vqkeras
    from vqkeras import evaluation

    for preset, dataset in (("vqvae_mnist", "mnist"), ("vqvae_cifar10", "cifar10")):
        model = vqkeras.from_preset(preset)
        images, _, full_split = data[dataset]
        # Traces for the timed call's batch shape: not timed.
        model.predict(images[: evaluation.EVALUATION_BATCH_SIZE], verbose=0)
        psnr, seconds = timed(mean_psnr_db, model, images)
        reference, tolerance, note = reference_of(preset, "psnr_db", full_split)
        report.check(f"{preset} psnr_db", psnr, reference, tolerance, note=note)
        report.throughput[f"{preset} evaluation"] = {
            "images": len(images),
            "seconds": seconds,
            "images_per_second": len(images) / seconds,
        }

    images, labels, full_split = data["mnist"]
    codes = evaluation.encode_indices(vqkeras.from_preset("vqvae_mnist"), images)
    for preset in ("pixelcnn_vqvae_mnist", "transformer_vqvae_mnist"):
        prior = vqkeras.from_preset(preset)
        batch = slice(0, evaluation.EVALUATION_BATCH_SIZE)
        evaluation.evaluate_prior(prior, codes[batch], labels[batch])  # traces: not timed
        result, seconds = timed(evaluation.evaluate_prior, prior, codes, labels)
        reference, tolerance, note = reference_of(preset, "nll_nats_per_code", full_split)
        report.check(
            f"{preset} nll_nats_per_code",
            result["nll_nats_per_code"],
            reference,
            tolerance,
            note=note,
        )
        report.throughput[f"{preset} evaluation"] = {
            "grids": len(codes),
            "seconds": seconds,
            "grids_per_second": len(codes) / seconds,
        }


class StepLosses(keras.callbacks.Callback):
    """Each training step's loss (from the epoch's running mean that `fit`
    logs) and the wall time at the end of each step."""

    def __init__(self):
        super().__init__()
        self.losses, self.times = [], []
        self._means = []

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])  # waits for the step
        self.times.append(time.perf_counter())
        previous = self._means[-1] if self._means else 0.0
        self._means.append(mean)
        self.losses.append(len(self._means) * mean - (len(self._means) - 1) * previous)


def check_training(report, train_images, steps):
    from vqkeras.families import get_family
    from vqkeras.training import compile_with_cosine_adam
    from vqkeras.zoo import autoencoder_recipe

    recipe = importlib.import_module("vqkeras.zoo.vqvae_mnist.recipe").RECIPE
    family = get_family(recipe.family, kind="autoencoder")
    options = family.resolve(family.options(recipe.options), epochs=1)
    keras.utils.set_random_seed(SEED)
    model = autoencoder_recipe.build_model(recipe, options, SEED)
    compile_with_cosine_adam(
        model,
        steps,
        learning_rate=recipe.learning_rate,
        final_fraction=family.final_learning_rate_fraction,
        betas=recipe.betas,
        group_learning_rates=family.group_learning_rates(options),
    )
    count = steps * TRAIN_BATCH_SIZE
    images = np.resize(train_images, (count, *train_images.shape[1:]))  # repeats a short set
    steps_logged = StepLosses()
    start = time.perf_counter()
    model.fit(
        images,
        batch_size=TRAIN_BATCH_SIZE,
        epochs=1,
        shuffle=False,
        callbacks=[steps_logged, *family.callbacks(options, steps_per_epoch=steps)],
        verbose=0,
    )
    losses, times = steps_logged.losses, steps_logged.times
    report.check("vqvae_mnist training: steps run", len(losses), steps, kind="equal")
    report.check(
        "vqvae_mnist training: every loss finite",
        bool(np.all(np.isfinite(losses))),
        True,
        kind="equal",
    )
    report.check(
        "vqvae_mnist training: last step's loss below the first's",
        losses[-1],
        losses[0],
        kind="below",
    )
    report.throughput["vqvae_mnist training"] = {
        "steps": steps,
        "batch_size": TRAIN_BATCH_SIZE,
        "first_step_s": times[0] - start,
        "images_per_second_after_first_step": (steps - 1)
        * TRAIN_BATCH_SIZE
        / (times[-1] - times[0]),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def draw(prior, labels):
    """Code grids of `labels`, as NumPy: the call waits for them."""
    return keras.ops.convert_to_numpy(prior.sample(len(labels), labels=labels, seed=SEED))


def check_sampling(report, samples_per_class):
    import vqkeras
    from vqkeras.evaluation import conditional_sample_agreement

    vqvae = vqkeras.from_preset("vqvae_mnist")
    classifier = vqkeras.from_preset("mnist_classifier")
    for preset in ("pixelcnn_vqvae_mnist", "transformer_vqvae_mnist"):
        prior = vqkeras.from_preset(preset)
        card = vqkeras.presets.load_metadata(preset)["metrics"]["conditional_sample_agreement"]
        labels = np.repeat(np.arange(prior.num_classes), samples_per_class).astype("int32")
        _, first_s = timed(draw, prior, labels)
        _, warm_s = timed(draw, prior, labels)
        result = conditional_sample_agreement(
            prior, vqvae, classifier, samples_per_class=samples_per_class, seed=SEED
        )
        p, n = card["agreement"], result["samples"]
        floor = math.floor(100 * (p - 4 * math.sqrt(p * (1 - p) / n))) / 100
        report.check(
            f"{preset} conditional_sample_agreement",
            result["agreement"],
            floor,
            kind="at_least",
            note=f"card: {p} on {card['samples']} samples; floor: 4 binomial std below for {n}",
        )
        report.throughput[f"{preset} sampling"] = {
            "grids": len(labels),
            "first_call_s": first_s,
            "grids_per_second": len(labels) / warm_s,
        }


def check_compression(report, count):
    import vqkeras
    from vqkeras.compression import Codec

    images, labels = vqkeras.samples.load("mnist")
    images, labels = images[:count], labels[:count]
    codec = Codec("vqvae_mnist", "pixelcnn_vqvae_mnist")
    compressed, compress_s = timed(codec.compress, images, labels=labels)
    restored, decompress_s = timed(codec.decompress, compressed.data)
    report.check(
        "compression: decoded codes equal the encoded ones",
        bool(np.array_equal(restored.codes, compressed.codes)),
        True,
        kind="equal",
    )
    report.check(
        "compression: decoded labels equal the encoded ones",
        bool(np.array_equal(restored.labels, labels)),
        True,
        kind="equal",
    )
    report.throughput["compression"] = {
        "images": count,
        "bits_per_image": len(compressed.data) * 8 / count,
        "nll_bits_per_image": compressed.nll_bits / count,
        "compress_images_per_second": count / compress_s,
        "decompress_images_per_second": count / decompress_s,
    }


def evaluation_data(args):
    """name -> (images, labels, whole test split?) for MNIST and CIFAR-10."""
    import vqkeras

    data = {}
    for name, path, shape in (
        ("mnist", args.mnist, (28, 28, 1)),
        ("cifar10", args.cifar10, (32, 32, 3)),
    ):
        if path:
            data[name] = (*load_test_split(path, shape), True)
        else:
            data[name] = (*vqkeras.samples.load(name), False)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CPU")
    parser.add_argument("--mnist", help="keras.datasets-layout mnist.npz (whole test split)")
    parser.add_argument("--cifar10", help="keras.datasets-layout cifar10.npz (whole test split)")
    parser.add_argument("--out", help="also write the JSON summary here")
    parser.add_argument("--require-gpu", action="store_true", help="fail unless on a GPU")
    parser.add_argument("--highest-precision", action="store_true", help="no TF32 on the GPU")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "default"
    sizes = SIZES[mode]
    started = time.perf_counter()
    device, on_gpu = device_description(args.highest_precision)
    log(f"gpu_check: backend={keras.config.backend()} device={device} mode={mode}")
    report = Report()
    if args.require_gpu:
        report.check("computes on a GPU", on_gpu, True, kind="equal")

    data = evaluation_data(args)
    log("evaluation")
    check_evaluation(report, data)
    log("training")
    if args.mnist:
        train_images = load_train_images(
            args.mnist, (28, 28, 1), sizes["train_steps"] * TRAIN_BATCH_SIZE
        )
    else:
        train_images = data["mnist"][0]
    check_training(report, train_images, sizes["train_steps"])
    log("sampling")
    check_sampling(report, sizes["samples_per_class"])
    log("compression")
    check_compression(report, sizes["compress_images"])

    summary = {
        "passed": all(check["passed"] for check in report.checks),
        "backend": keras.config.backend(),
        "device": device,
        "mode": mode,
        "sizes": sizes,
        "highest_precision": args.highest_precision,
        "evaluation_data": {
            name: "whole test split" if full else "vqkeras.samples (256 images)"
            for name, (_, _, full) in data.items()
        },
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "vqkeras": importlib.import_module("vqkeras").__version__,
            keras.config.backend(): importlib.import_module(keras.config.backend()).__version__,
        },
        "tensorflow_imported": sys.modules.get("tensorflow") is not None,
        "load_average": list(os.getloadavg()),
        "wall_s": time.perf_counter() - started,
        "checks": report.checks,
        "throughput": report.throughput,
    }
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
