"""Train an autoencoder of any family on your own images.

    vqkeras train --family ema-vqvae --data photos/ --out runs/mine --epochs 20

Builds the model with `vqkeras.models.factory.build_autoencoder` (--family is
any name of its registry, `FAMILIES`), holds out a random
`--validation-fraction` of the images (seeded), then trains, evaluates and
saves through `vqkeras.training.train_and_evaluate`, as the zoo recipes do
(Adam with a cosine decay to a tenth of --learning-rate, checkpoints), and
writes to --out:

    run.json                         the settings of the run
    training_log.csv, timing.json    per-epoch metrics and throughput
    checkpoints/, backup/            per-epoch weights; the state to resume from
    tensorboard/                     logs for `tensorboard --logdir OUT/tensorboard`
    reconstructions/epoch_NNN.png    held-out images over their reconstructions
    preset/                          the trained model: vqkeras.from_preset("OUT/preset")
    metrics.json                     metrics on the held-out images

--distribute trains data-parallel on all local devices (JAX: GPUs, or the CPU
devices of XLA_FLAGS=--xla_force_host_platform_device_count=N; TensorFlow:
GPUs, or logical CPUs; not PyTorch), --batch-size being the global batch, a
multiple of the device count. So that every batch splits evenly, the training
images and the images validated after each epoch are cut to a multiple of the
device count (at most count - 1 dropped; metrics.json says how many).

--family vqgan trains a VQGAN (the ema-vqvae model with a patch
discriminator, which has its own Adam optimizer, with the autoencoder's
settings unless --discriminator-learning-rate says otherwise; both
optimizers' states are saved for resumption), --family adversarial-klvae
the klvae model the same way (latent diffusion's AutoencoderKL recipe):
--discriminator-start steps of the autoencoder alone first,
--adversarial-weight, and --perceptual-features CLASSIFIER for a perceptual
loss in the features of a classifier preset (none by default). GANs often
train with --adam-betas 0.5 0.9, as taming-transformers' VQGAN. Their presets
hold the inference VQVAE or KLVAE only, without the discriminator.

--family gumbel-vae anneals its Gumbel-softmax temperature exponentially per
step from --gumbel-temperature START to END (default 1 to 1/16, DALL-E's
range) over --gumbel-anneal-epochs (default: --epochs; recorded, so that a
resumed run keeps its schedule), then holds it
(`vqkeras.callbacks.GumbelTemperatureSchedule`).

--code-dim N, --normalize-codes, --kmeans-init and --gradient-estimator
rotation set the codebooks of the VQ families (factorized and l2-normalised
codes, k-means initialisation, the rotation trick: see docs/quantizers.md);
rqvae takes --kmeans-init only, and the other families none of them.

--augment flips and shifts the training images at random (Keras's
preprocessing layers in the tf.data input pipeline, on every backend; see
`vqkeras.augmentation`); `--augment shift` for digits and text, which flips
would turn into other symbols.

Interrupted? Run the same command again: training resumes from the last
completed epoch (a larger --epochs trains further). A folder that holds a run
with other settings, or other files, is refused: choose a new --out.
"""

import json
import os

import keras
import numpy as np

from vqkeras import distribution
from vqkeras.apps.images import image_grid, paired_rows, to_uint8, write_png
from vqkeras.apps.inputs import load_images
from vqkeras.apps.outputs import describe_input
from vqkeras.augmentation import augmentation_layers
from vqkeras.callbacks import GumbelTemperatureSchedule
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.file_io import write_json_atomic
from vqkeras.layers import PerceptualLoss
from vqkeras.models.factory import (
    ADVERSARIAL_FAMILIES,
    CODEBOOK_OPTIONS,
    FAMILIES,
    build_autoencoder,
    families_taking,
)
from vqkeras.training import PRESET_DIR, train_and_evaluate

RUN_FILE = "run.json"
GRID_IMAGES = 16
GRID_COLUMNS = 8
# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "quiet", "debug", "run")
# Keras's and PyTorch's defaults.
ADAM_BETAS = (0.9, 0.999)
# DALL-E's Gumbel-softmax temperatures, first and last.
GUMBEL_TEMPERATURES = (1.0, 1.0 / 16)


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


def _settings(args):
    """The arguments that define a run, as JSON values (tuples become lists)."""
    settings = {k: v for k, v in vars(args).items() if k not in RESUMABLE_CHANGES}
    return json.loads(json.dumps(settings))


def _check_out_folder(out, settings):
    """Refuses a folder that holds anything but an earlier run of these settings."""
    run_file = os.path.join(out, RUN_FILE)
    if os.path.exists(run_file):
        with open(run_file) as f:
            earlier = json.load(f)
        keys = settings.keys() | earlier.keys()
        changed = sorted(k for k in keys if settings.get(k) != earlier.get(k))
        if changed:
            details = ", ".join(f"{k}: {earlier.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise FileExistsError(
                f"{out} holds a training run with other settings ({details}); "
                "choose a new --out, or rerun with the same settings to resume."
            )
    elif os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise FileExistsError(
            f"--out {out!r} exists and is not a vqkeras training run: choose a new folder."
        )


def _split(images, fraction, seed):
    """Training and held-out images: a seeded random `fraction` is held out."""
    held_out = max(1, round(len(images) * fraction))
    if len(images) - held_out < 1:
        raise ValueError(
            f"Too few images to train: {len(images)} with --validation-fraction {fraction} "
            "leaves none for training."
        )
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[held_out:]], images[order[:held_out]]


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


def _even(images, devices, what):
    """The first images of `images`, as many as a multiple of `devices`."""
    kept = len(images) - len(images) % devices
    if kept == 0:
        raise ValueError(
            f"--distribute over {devices} devices needs at least {devices} {what}. "
            f"Received: {len(images)}."
        )
    return images[:kept]


def _check_optimizer_settings(args):
    """Refuses Adam betas outside [0, 1) and the adversarial families' options
    for the other families, before anything is written."""
    if args.adam_betas is not None and not all(0 <= beta < 1 for beta in args.adam_betas):
        raise ValueError(
            f"--adam-betas must both lie in [0, 1). Received: {' '.join(map(str, args.adam_betas))}."
        )
    adversarial_only = {
        "--perceptual-features": args.perceptual_features,
        "--discriminator-learning-rate": args.discriminator_learning_rate,
        "--perceptual-weight": args.perceptual_weight,
    }
    for flag, value in adversarial_only.items():
        if value is not None and args.family not in ADVERSARIAL_FAMILIES:
            raise ValueError(
                f"{flag} applies to the families {', '.join(ADVERSARIAL_FAMILIES)}. "
                f"Received: --family {args.family}."
            )
    if args.perceptual_weight is not None and args.perceptual_features is None:
        raise ValueError(
            "--perceptual-weight weighs the loss that --perceptual-features adds. "
            f"Received --perceptual-weight {args.perceptual_weight} without --perceptual-features."
        )


def _adversarial_settings(args):
    """What an adversarial family's card must say of its training: the
    feature network of its perceptual loss above all."""
    if args.family not in ADVERSARIAL_FAMILIES:
        return {}
    return {
        "discriminator_start": args.discriminator_start,
        "adversarial_weight": args.adversarial_weight,
        "discriminator_learning_rate": args.discriminator_learning_rate or args.learning_rate,
        "perceptual_features": args.perceptual_features,
        "perceptual_weight": _perceptual_weight(args),
    }


def _perceptual_weight(args):
    """The perceptual loss's factor (the model's default, 1, when not given)."""
    return 1.0 if args.perceptual_weight is None else args.perceptual_weight


def _gumbel_settings(args):
    """Checks the Gumbel options; for --family gumbel-vae, resolves the
    length of the anneal (default: --epochs), which run.json then records."""
    if args.family != "gumbel-vae":
        if args.gumbel_temperature is not None or args.gumbel_anneal_epochs is not None:
            raise ValueError(
                "--gumbel-temperature and --gumbel-anneal-epochs apply to --family gumbel-vae. "
                f"Received: --family {args.family}."
            )
        return
    if args.gumbel_temperature is None:
        args.gumbel_temperature = list(GUMBEL_TEMPERATURES)
    if args.gumbel_anneal_epochs is None:
        args.gumbel_anneal_epochs = args.epochs


def _gumbel_schedule(args, train_images):
    """The temperature schedule of --family gumbel-vae (None for the others)."""
    if args.family != "gumbel-vae":
        return None
    steps_per_epoch = -(-train_images // args.batch_size)
    start, end = args.gumbel_temperature
    return GumbelTemperatureSchedule(
        args.gumbel_anneal_epochs * steps_per_epoch,
        initial_temperature=start,
        final_temperature=end,
    )


def _gumbel_card(args):
    """The temperature schedule, for a Gumbel model's card."""
    if args.family != "gumbel-vae":
        return {}
    return {
        "gumbel_temperature": args.gumbel_temperature,
        "gumbel_anneal_epochs": args.gumbel_anneal_epochs,
    }


def _codebook_options(args):
    """The codebook options of --family: the flags given, the factory's
    defaults for the others. A flag the family does not take is refused,
    naming the families that take it. (Absent flags stay None in run.json,
    as in the runs made before these flags existed, which thus resume.)"""
    given = {name for name in CODEBOOK_OPTIONS if getattr(args, name) is not None}
    refused = sorted(given - set(FAMILIES[args.family].codebook_options))
    if refused:
        details = "; ".join(
            f"--{name.replace('_', '-')} applies to {', '.join(families_taking(name))}"
            for name in refused
        )
        raise ValueError(f"{details}. Received: --family {args.family}.")
    return {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in CODEBOOK_OPTIONS.items()
        if name in FAMILIES[args.family].codebook_options
    }


def run(args):
    if not 0 < args.validation_fraction < 1:
        raise ValueError(
            f"--validation-fraction must be in (0, 1). Received: {args.validation_fraction}."
        )
    _gumbel_settings(args)
    _check_optimizer_settings(args)
    codebook_options = _codebook_options(args)
    _check_out_folder(args.out, _settings(args))
    devices = _device_count(args)
    inputs = load_images(args.data, args.split, limit=args.limit, quiet=args.quiet)
    x_train, x_val = _split(inputs.images, args.validation_fraction, args.seed)
    # JAX refuses a batch that does not split evenly over the devices, and
    # TensorFlow would weight the samples of a smaller share more.
    x_train_even = _even(x_train, devices, "training images")
    x_val_even = _even(x_val, devices, "held-out images")
    grid_images = max(devices, GRID_IMAGES - GRID_IMAGES % devices)

    perceptual_loss = (
        PerceptualLoss.from_classifier(args.perceptual_features)
        if args.perceptual_features
        else None
    )

    def build():
        model = build_autoencoder(
            args.family,
            x_train.shape[1:],
            latent_dim=args.latent_dim,
            channels=args.channels,
            num_residual_blocks=args.residual_blocks,
            num_embeddings=args.num_embeddings,
            depth=args.depth,
            beta=args.beta,
            kl_weight=args.kl_weight,
            discriminator_start=args.discriminator_start,
            discriminator_weight=args.adversarial_weight,
            perceptual_loss=perceptual_loss,
            perceptual_weight=_perceptual_weight(args),
            seed=args.seed,
            **codebook_options,
        )
        # Only once the settings give a model: a command that fails to build
        # leaves no run behind that would refuse its corrected version.
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(os.path.join(args.out, RUN_FILE), _settings(args), overwrite=True)
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
            **trained.timer.summary(),
            "validation": trained.evaluation,
            "preset": os.path.join(args.out, PRESET_DIR),
        }
        metadata = {
            "dataset": f"{summary['input']} (vqkeras train, {len(x_train_even)} training images)",
            "evaluation": f"{len(x_val)} held-out images (seeded random "
            f"{args.validation_fraction:.0%} of the input)",
            "training": {
                "epochs": len(trained.timer.epochs),
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "adam_betas": list(args.adam_betas or ADAM_BETAS),
                "devices": devices,
                "augmentation": args.augment,
                **_adversarial_settings(args),
                **_gumbel_card(args),
                **codebook_options,
            },
            "metrics": trained.evaluation,
        }
        return summary, metadata

    trained = train_and_evaluate(
        build,
        x_train_even,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        # All held-out images, on one device: evaluation runs outside --distribute.
        evaluate=lambda model: evaluate_reconstructions(model, x_val, batch_size=args.batch_size),
        report=report,
        learning_rate=args.learning_rate,
        betas=tuple(args.adam_betas or ADAM_BETAS),
        discriminator_learning_rate=args.discriminator_learning_rate,
        validation_data=(x_val_even,),
        distribute=args.distribute,
        callbacks=[
            keras.callbacks.TensorBoard(os.path.join(args.out, "tensorboard")),
            ReconstructionGrid(x_val_even[:grid_images], os.path.join(args.out, "reconstructions")),
            *filter(None, [_gumbel_schedule(args, len(x_train_even))]),
        ],
        verbose=0 if args.quiet else 2,
        augmentation=augmentation_layers(args.augment, seed=args.seed) if args.augment else None,
    )
    return trained.metrics
