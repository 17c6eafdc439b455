"""Train a model of any family on your own images: an autoencoder, or a prior
over an autoencoder's codes.

    vqkeras train --family ema-vqvae --data photos/ --out runs/mine --epochs 20
    vqkeras train --family pixelcnn-prior --model runs/mine/preset --data photos/ \\
        --out runs/mine_prior
    vqkeras sample --model runs/mine/preset --prior runs/mine_prior/preset --out samples/

--family is any name of the family registry (`vqkeras.families.FAMILIES`);
`vqkeras train --family NAME --help` lists that family's own options (and,
for the autoencoders, those of the encoder/decoder --architecture). A random
`--validation-fraction` of the images is held out (seeded); the run trains,
evaluates and saves through `vqkeras.training.train_and_evaluate`, as the zoo
recipes do (Adam with a cosine decay of --learning-rate, checkpoints), and
writes to --out:

    run.json                         the settings of the run
    training_log.csv, timing.json    per-epoch metrics and throughput
    checkpoints/, backup/            per-epoch weights; the state to resume from
    tensorboard/                     logs for `tensorboard --logdir OUT/tensorboard` (with TensorFlow)
    reconstructions/epoch_NNN.png    autoencoders: held-out images over their reconstructions
    codes.npz                        priors: the code grids of the input, made once
    preset/                          the trained model: vqkeras.from_preset("OUT/preset")
                                     (or "OUT": a run's folder stands for its preset);
                                     a prior's is what `vqkeras sample --prior` takes
    metrics.json                     metrics on the held-out images (or their codes)

A prior (--family pixelcnn-prior, transformer-prior, maskgit-prior) models
the codes of the input images under --model, a VQ autoencoder (preset or
folder; the images are converted to its channels and size). It is
class-conditional when the input has labels (an .npz with labels,
sample:NAME, tfds:NAME), unconditional otherwise. A VQ-VAE-2 has two grids:
train one prior per --grid (the bottom one is conditioned on the top codes).

--init-from PRESET_OR_DIR starts from a trained model's weights (its
architecture must be the same; a VQGAN may start from a VQ-VAE preset).
What a family needs besides is its own: a Gumbel VAE anneals its temperature,
a KL-VAE stores its latents' measured scaling factor in its preset, the
adversarial families train their discriminator with its own Adam
(--adam-betas 0.5 0.9 as taming-transformers' VQGAN) and save the
inference model only.

--distribute trains data-parallel on all local devices (JAX: GPUs, or the CPU
devices of XLA_FLAGS=--xla_force_host_platform_device_count=N; TensorFlow:
GPUs, or logical CPUs; not PyTorch), --batch-size being the global batch, a
multiple of the device count. So that every batch splits evenly, the training
examples and those validated after each epoch are cut to a multiple of the
device count (at most count - 1 dropped; metrics.json says how many).

--augment flips and shifts the training images of an autoencoder at random
(Keras's preprocessing layers in the tf.data input pipeline, on every
backend; see `vqkeras.augmentation`); `--augment shift` for digits and text,
which flips would turn into other symbols.

Interrupted? Run the same command again: training resumes from the last
completed epoch (a larger --epochs trains further). A folder that holds a run
with other settings, or other files, is refused: choose a new --out.
"""

import contextlib
import json
import os
import sys

import keras
import numpy as np

from vqkeras import distribution
from vqkeras.apps import models
from vqkeras.apps.arguments import (
    add_data_options,
    augmentation_list,
    non_negative_int,
    positive_int,
)
from vqkeras.apps.console import notice
from vqkeras.apps.images import image_grid, paired_rows, to_uint8, write_png
from vqkeras.apps.inputs import load_images, model_image_shape
from vqkeras.apps.outputs import describe_input
from vqkeras.augmentation import augmentation_layers
from vqkeras.dependencies import INSTALL_HINT, tensorflow_available
from vqkeras.evaluation import evaluate_prior, evaluate_reconstructions
from vqkeras.families import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    FAMILIES,
    get_architecture,
    get_family,
)
from vqkeras.families.options import add_arguments, flag, options_from_args
from vqkeras.families.registry import first_paragraph
from vqkeras.file_io import write_atomic, write_json_atomic
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import PRESET_DIR, num_examples, train_and_evaluate

RUN_FILE = "run.json"
CODES_FILE = "codes.npz"
GRID_IMAGES = 16
GRID_COLUMNS = 8
# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "quiet", "debug", "run")
# Keras's and PyTorch's defaults.
ADAM_BETAS = (0.9, 0.999)
FAMILY_OPTIONS = "family_options"
ARCHITECTURE_OPTIONS = "architecture_options"


def _named_value(argv, option):
    """The value of `option` in `argv` (`--option V` or `--option=V`), or None."""
    for i, token in enumerate(argv):
        if token == option and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(option + "="):
            return token[len(option) + 1 :]
    return None


def add_arguments_for(parser, argv):
    """The options of `vqkeras train`: the shared ones, and those of the
    family (and architecture) that `argv` names, generated from their options
    dataclasses. Without a known --family, `--help` lists the families."""
    family = FAMILIES.get(_named_value(argv, "--family"))
    parser.add_argument(
        "--family",
        required=True,
        choices=FAMILIES,
        help="model family: "
        + "; ".join(f"{name}: {spec.summary}" for name, spec in FAMILIES.items())
        + ". `--family NAME --help` lists its options",
    )
    # --input too: the other commands' name for the same thing.
    add_data_options(parser, flags=("--data", "--input"), split="train")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="run folder (created if needed)"
    )
    parser.add_argument("--epochs", type=positive_int, default=10, help="(default: 10)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="(default: 64)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's initial learning rate, cosine-decayed to "
        + (
            f"{family.final_learning_rate_fraction:g} times it"
            if family
            else "the family's fraction"
        )
        + " (default: 1e-3)",
    )
    parser.add_argument(
        "--adam-betas",
        type=float,
        nargs=2,
        metavar=("BETA_1", "BETA_2"),
        help="Adam's beta_1 and beta_2, of every optimizer (default: 0.9 0.999; GANs often "
        "train with 0.5 0.9)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of the images held out, at random (default: 0.1)",
    )
    parser.add_argument(
        "--init-from",
        metavar="PRESET_OR_DIR",
        help="start from this preset's weights (the same architecture; default: a fresh "
        "initialization)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="(default: 0)")
    parser.add_argument(
        "--distribute",
        action="store_true",
        help="train data-parallel on all local devices, --batch-size being the global batch "
        "(JAX and TensorFlow; see docs/distributed.md)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    if family is None:
        return
    if family.kind == "prior":
        parser.add_argument(
            "--model",
            required=True,
            metavar="PRESET_OR_DIR",
            help="the VQ autoencoder whose codes the prior models",
        )
    else:
        from vqkeras.augmentation import AUGMENTATIONS

        parser.add_argument(
            "--augment",
            nargs="?",
            const="flip,shift",
            type=augmentation_list,
            metavar="KINDS",
            help="augment the training images in the input pipeline: a comma-separated subset "
            "of "
            + "; ".join(f"{name}: {what}" for name, what in AUGMENTATIONS.items())
            + " (bare --augment: flip,shift; digits and text want shift only; default: none)",
        )
        parser.add_argument(
            "--architecture",
            choices=ARCHITECTURES,
            default=DEFAULT_ARCHITECTURE,
            help=f"encoder/decoder architecture (default: {DEFAULT_ARCHITECTURE})",
        )
        name = _named_value(argv, "--architecture") or DEFAULT_ARCHITECTURE
        if name in ARCHITECTURES:
            architecture = ARCHITECTURES[name]
            add_arguments(
                parser,
                architecture.Options,
                ARCHITECTURE_OPTIONS,
                title=f"options of --architecture {name} ({first_paragraph(architecture)})",
            )
    add_arguments(
        parser,
        family.Options,
        FAMILY_OPTIONS,
        title=f"options of --family {family.name} ({family.summary})",
    )


def _flags(options_class):
    return {flag(name) for name in options_class.names()}


def unknown_flags_error(family_name, extras):
    """A `ValueError` for the command-line words `extras` that --family
    `family_name` does not take, naming the families (or architectures)
    whose options they are."""
    explained = []
    for given in sorted({word.split("=")[0] for word in extras if word.startswith("--")}):
        owners = [name for name, spec in FAMILIES.items() if given in _flags(spec.Options)]
        owners += [
            f"--architecture {name}"
            for name, architecture in ARCHITECTURES.items()
            if given in _flags(architecture.Options)
        ]
        where = f"an option of {', '.join(owners)}" if owners else "no option of vqkeras train"
        explained.append(f"{given} is {where}")
    words = " ".join(extras)
    return ValueError(
        f"{'; '.join(explained) or f'Unexpected arguments: {words}'}. Received: --family "
        f"{family_name} (`vqkeras train --family {family_name} --help` lists its options)."
    )


def tensorboard_callbacks(out):
    """Keras's TensorBoard callback, logging to OUT/tensorboard, in a list; an
    empty list, with a notice, where TensorFlow (which writes the logs) is not
    installed."""
    if not tensorflow_available():
        notice(
            "no TensorBoard logs: they are written with TensorFlow, which is not installed; "
            f"install it with {INSTALL_HINT}"
        )
        return []
    return [keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"))]


class ReconstructionGrid(keras.callbacks.Callback):
    """Writes `folder/epoch_NNN.png` after each epoch: `images` over their
    reconstructions, to watch training at a glance."""

    def __init__(self, images, folder):
        super().__init__()
        self.images = images
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        reconstructions = self.model.predict(self.images, verbose=0)
        rows = paired_rows(self.images, to_uint8(reconstructions), GRID_COLUMNS)
        os.makedirs(self.folder, exist_ok=True)
        write_png(
            os.path.join(self.folder, f"epoch_{epoch + 1:03d}.png"),
            image_grid(rows, GRID_COLUMNS, rows_per_group=2),
            overwrite=True,  # a resumed run redoes the epoch it was interrupted in
        )


def _settings(args, family_options, architecture_options):
    """The settings that define a run, as JSON values (tuples become lists)."""
    settings = {k: v for k, v in vars(args).items() if "." not in k and k not in RESUMABLE_CHANGES}
    settings[FAMILY_OPTIONS] = family_options.as_dict()
    if architecture_options is not None:
        settings[ARCHITECTURE_OPTIONS] = architecture_options.as_dict()
    return json.loads(json.dumps(settings))


def _check_out_folder(out, settings):
    """Refuses a folder that holds anything but an earlier run of these settings."""
    run_file = os.path.join(out, RUN_FILE)
    if os.path.exists(run_file):
        with open(run_file) as f:
            earlier = json.load(f)
        changed = _changes(earlier, settings)
        if changed:
            raise FileExistsError(
                f"{out} holds a training run with other settings ({', '.join(changed)}); "
                "choose a new --out, or rerun with the same settings to resume."
            )
    elif os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise FileExistsError(
            f"--out {out!r} exists and is not a vqkeras training run: choose a new folder."
        )


def _changes(earlier, settings, prefix=""):
    """`["name: old -> new", ...]` for the settings that differ (options by name)."""
    changed = []
    for key in sorted(settings.keys() | earlier.keys()):
        old, new = earlier.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _changes(old, new)
        elif old != new:
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changed


def _split(count, fraction, seed):
    """Indices of the training and held-out examples: a seeded random
    `fraction` of `count` is held out."""
    held_out = max(1, round(count * fraction))
    if count - held_out < 1:
        raise ValueError(
            f"Too few images to train: {count} with --validation-fraction {fraction} "
            "leaves none for training."
        )
    order = np.random.default_rng(seed).permutation(count)
    return order[held_out:], order[:held_out]


def _device_count(args):
    """The devices of --distribute (1 without it), the batch size checked."""
    if not args.distribute:
        return 1
    try:
        devices = distribution.device_count()
    except NotImplementedError as error:  # PyTorch: a usage error on the command line
        raise ValueError(f"--distribute: {error}") from error
    distribution.check_batch_size(args.batch_size, devices)
    return devices


def _even(count, devices, what):
    """The number of the first `count` examples to keep: a multiple of `devices`."""
    kept = count - count % devices
    if kept == 0:
        raise ValueError(
            f"--distribute over {devices} devices needs at least {devices} {what}. "
            f"Received: {count}."
        )
    return kept


def _take(x, indices):
    """`x` (an array or a tuple of arrays) at `indices`."""
    if isinstance(x, tuple):
        return tuple(part[indices] for part in x)
    return x[indices]


def _check_common(args):
    if not 0 < args.validation_fraction < 1:
        raise ValueError(
            f"--validation-fraction must be in (0, 1). Received: {args.validation_fraction}."
        )
    if args.adam_betas is not None and not all(0 <= beta < 1 for beta in args.adam_betas):
        raise ValueError(
            f"--adam-betas must both lie in [0, 1). Received: {' '.join(map(str, args.adam_betas))}."
        )


def run(args):
    family = get_family(args.family)
    _check_common(args)
    options = family.resolve(
        family.options(options_from_args(args, FAMILY_OPTIONS)), epochs=args.epochs
    )
    architecture_options = None
    if family.kind == "autoencoder":
        architecture = get_architecture(args.architecture)
        architecture_options = architecture.Options.from_dict(
            options_from_args(args, ARCHITECTURE_OPTIONS), f"architecture {args.architecture!r}"
        )
    settings = _settings(args, options, architecture_options)
    _check_out_folder(args.out, settings)
    devices = _device_count(args)
    run_kind = _train_prior if family.kind == "prior" else _train_autoencoder
    # Keras prints its per-epoch lines on stdout, which is the summary's.
    with contextlib.redirect_stdout(sys.stderr):
        return run_kind(args, family, options, architecture_options, settings, devices)


def _write_settings(args, settings):
    # Only once the settings give a model: a command that fails to build
    # leaves no run behind that would refuse its corrected version.
    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(os.path.join(args.out, RUN_FILE), settings, overwrite=True)


def _fit_settings(args, family, options):
    """The arguments of `train_and_evaluate` that every kind shares."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "init_from": args.init_from,
        "learning_rate": args.learning_rate,
        "final_fraction": family.final_learning_rate_fraction,
        "betas": tuple(args.adam_betas or ADAM_BETAS),
        "group_learning_rates": family.group_learning_rates(options),
        "distribute": args.distribute,
        "verbose": 0 if args.quiet else 2,
    }


def _training_card(args, family, options, trained, devices, extra=None):
    """The "training" entry of the preset's metadata."""
    return {
        "family": family.name,
        "epochs": len(trained.timer.epochs),
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "adam_betas": list(args.adam_betas or ADAM_BETAS),
        "devices": devices,
        **({"init_from": args.init_from} if args.init_from else {}),
        **(extra or {}),
        **family.card(options),
    }


def _train_autoencoder(args, family, options, architecture_options, settings, devices):
    inputs = load_images(args.data, args.split, limit=args.limit, quiet=args.quiet)
    train_indices, val_indices = _split(len(inputs.images), args.validation_fraction, args.seed)
    x_train, x_val = inputs.images[train_indices], inputs.images[val_indices]
    # JAX refuses a batch that does not split evenly over the devices, and
    # TensorFlow would weight the samples of a smaller share more.
    x_train_even = x_train[: _even(len(x_train), devices, "training images")]
    x_val_even = x_val[: _even(len(x_val), devices, "held-out images")]
    grid_images = max(devices, GRID_IMAGES - GRID_IMAGES % devices)

    def build():
        model = build_autoencoder(
            args.family,
            x_train.shape[1:],
            architecture=args.architecture,
            seed=args.seed,
            **options.as_dict(),
            **architecture_options.as_dict(),
        )
        _write_settings(args, settings)
        return model

    def report(trained):
        summary = {
            "family": args.family,
            **describe_input(args.data, args.split),
            "images": len(inputs.images),
            "skipped": len(inputs.skipped),
            "train_images": len(x_train_even),
            "validation_images": len(x_val),
            "devices": devices,
            "dropped_for_devices": len(x_train) - len(x_train_even),
            "image_shape": list(x_train.shape[1:]),
            "parameters": trained.model.count_params(),
            **trained.measured,
            **trained.timer.summary(),
            "validation": trained.evaluation,
            "preset": os.path.join(args.out, PRESET_DIR),
        }
        extra = {
            "augmentation": args.augment,
            "architecture": args.architecture,
            **architecture_options.as_dict(),
            **trained.measured,
        }
        metadata = {
            "dataset": f"{summary['input']} (vqkeras train, {len(x_train_even)} training images)",
            "evaluation": f"{len(x_val)} held-out images (seeded random "
            f"{args.validation_fraction:.0%} of the input)",
            "training": _training_card(args, family, options, trained, devices, extra),
            "metrics": trained.evaluation,
        }
        return summary, metadata

    steps_per_epoch = -(-len(x_train_even) // args.batch_size)
    trained = train_and_evaluate(
        build,
        x_train_even,
        args.out,
        # All held-out images, on one device: evaluation runs outside --distribute.
        evaluate=lambda model: evaluate_reconstructions(model, x_val, batch_size=args.batch_size),
        report=report,
        after_training=lambda model: family.after_training(model, x_train_even, seed=args.seed),
        validation_data=(x_val_even,),
        callbacks=[
            *tensorboard_callbacks(args.out),
            ReconstructionGrid(x_val_even[:grid_images], os.path.join(args.out, "reconstructions")),
            *family.callbacks(options, steps_per_epoch=steps_per_epoch),
        ],
        augmentation=augmentation_layers(args.augment, seed=args.seed) if args.augment else None,
        **_fit_settings(args, family, options),
    )
    return trained.metrics


def _codes(args, autoencoder, images):
    """`{grid name: int32 codes}` of `images`, made once per run (codes.npz)."""
    path = os.path.join(args.out, CODES_FILE)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as codes:
            return {name: codes[name] for name in codes.files}
    codes = models.encode(autoencoder, images, args.batch_size, quiet=args.quiet)
    os.makedirs(args.out, exist_ok=True)
    write_atomic(path, lambda f: np.savez(f, **codes), mode="wb")
    return codes


def _train_prior(args, family, options, architecture_options, settings, devices):
    autoencoder = models.load_model(args.model)
    models.require_codes(autoencoder, args.model)
    grid, condition = family.modelled_grids(models.code_grids(autoencoder, args.model), options)
    channels, size = model_image_shape(autoencoder)
    inputs = load_images(
        args.data, args.split, channels=channels, size=size, limit=args.limit, quiet=args.quiet
    )
    x = family.inputs(_codes(args, autoencoder, inputs.images), grid, condition)
    labels = inputs.labels
    num_classes = None if labels is None else int(labels.max()) + 1
    train_indices, val_indices = _split(num_examples(x), args.validation_fraction, args.seed)
    train_indices = train_indices[: _even(len(train_indices), devices, "training images")]
    val_even = val_indices[: _even(len(val_indices), devices, "held-out images")]
    x_train, x_val = _take(x, train_indices), _take(x, val_indices)
    y_train = y_val = None
    if labels is not None:
        labels = labels.astype("int32")
        y_train, y_val = labels[train_indices], labels[val_indices]
    validation_data = (_take(x, val_even),) + (() if labels is None else (labels[val_even],))
    image_shape = (*size, channels)

    def build():
        prior = family.build(
            grid,
            options,
            condition=condition,
            num_classes=num_classes,
            image_shape=image_shape,
            name=args.family.replace("-", "_"),
        )
        _write_settings(args, settings)
        return prior

    def report(trained):
        summary = {
            "family": args.family,
            "model": args.model,
            **describe_input(args.data, args.split),
            "images": len(inputs.images),
            "skipped": len(inputs.skipped),
            "train_grids": len(train_indices),
            "validation_grids": len(val_indices),
            "grid": grid.name,
            "grid_shape": list(grid.shape),
            "num_embeddings": grid.num_embeddings,
            "conditioned_on": None if condition is None else condition.name,
            "num_classes": num_classes,
            "devices": devices,
            "parameters": trained.model.count_params(),
            **trained.timer.summary(),
            "validation": trained.evaluation,
            "preset": os.path.join(args.out, PRESET_DIR),
        }
        labelled = "with their class labels" if num_classes else "without labels"
        metadata = {
            "vqvae": args.model,
            "dataset": f"{summary['input']}: the {grid.name!r} code grids of {args.model} "
            f"(vqkeras train, {len(train_indices)} training images, {labelled})",
            "evaluation": f"the codes of {len(val_indices)} held-out images (seeded random "
            f"{args.validation_fraction:.0%} of the input), vqkeras.evaluation.evaluate_prior",
            "training": _training_card(args, family, options, trained, devices),
            "metrics": trained.evaluation,
        }
        return summary, metadata

    steps_per_epoch = -(-len(train_indices) // args.batch_size)
    trained = train_and_evaluate(
        build,
        x_train,
        args.out,
        y=y_train,
        evaluate=lambda prior: evaluate_prior(prior, x_val, y_val, batch_size=args.batch_size),
        report=report,
        after_training=lambda prior: family.after_training(prior, x_train, seed=args.seed),
        validation_data=validation_data,
        callbacks=[
            *tensorboard_callbacks(args.out),
            *family.callbacks(options, steps_per_epoch=steps_per_epoch),
        ],
        **_fit_settings(args, family, options),
    )
    return trained.metrics
