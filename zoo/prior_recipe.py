"""The recipe of the prior presets: `zoo/<preset>/recipe.py` names the VQ-VAE
preset, the data, the prior's class and sizes; this module does the rest.

It encodes the images of a keras.datasets-layout .npz into code grids with
the VQ-VAE, trains a class-conditional prior (`PixelCNNPrior`,
`TransformerPrior` or `MaskGITPrior`) on the
training grids with their labels (the last 5000 training images held out for
validation, as in the autoencoder recipes), then measures the prior on the
test grids and writes everything to `--out`:

    codes.npz            the exported int32 code grids and labels of every split
    samples.npz          sampled code grids (10 per class) and their decoded images
    samples.png          those images, one row per class
    metrics.json         test-split NLL (nats/code) and bits/dim, timings, and
                         (where the recipe names a classifier) the agreement of
                         that classifier with 1000 class-conditional samples
    preset/              the trained prior as a preset: what zoo/<preset>/ ships

plus the files of `vqkeras.training.fit_resumable` (training_log.csv,
timing.json, checkpoints/, backup/).

`--schedule-epochs` sets the length of the cosine learning-rate schedule when
it differs from `--epochs` (to reproduce a run that a time limit stopped
early); `--time-limit-minutes` stops training after the epoch that passes
that much training time.

Continuing a trained prior: `--initial-weights` (a prior preset, shipped name
or folder, of the same architecture) starts training from its weights instead
of a random initialisation, and `--learning-rate` sets the new cosine
schedule's peak (default: the recipe's). The preset's metadata records both,
so a card can state the whole chain of runs.

Resuming: run the same command again after an interruption; training restarts
from the last completed epoch. To start afresh, use a new `--out` directory.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
given the codes before them and the class label; `bits_per_dim` the NLL of a
whole grid in bits divided by the pixel values of an image (H * W * C). A
MaskGIT prior reports `masked_code_cross_entropy_nats` instead (see
`vqkeras.evaluation.evaluate_prior`).
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np

import vqkeras
from vqkeras.evaluation import conditional_sample_agreement, encode_indices, evaluate_prior
from vqkeras.file_io import write_atomic, write_json_atomic
from vqkeras.models import MaskGITPrior, PixelCNNPrior
from vqkeras.training import (
    compile_with_cosine_adam,
    completed_epochs,
    fit_resumable,
    load_npz_splits,
)
from vqkeras.zoo.recipe_options import parse_training_args, training_parser

LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE_FRACTION = 0.05
VALIDATION_SIZE = 5000
EVAL_BATCH_SIZE = 500
SAMPLES_PER_CLASS = 10
AGREEMENT_SAMPLES_PER_CLASS = 100
# The sample check's ceiling: this much above the NLL measured at save time.
SAMPLE_NLL_MARGIN = 0.05
# A prior without a likelihood is checked by the classifier's agreement with
# 10 samples per class (seed 0); other backends draw other samples, so the
# floor sits 0.1 (about 3 standard deviations of 100 samples at 90%) below.
SAMPLE_CHECK_SAMPLES_PER_CLASS = 10
SAMPLE_AGREEMENT_MARGIN = 0.1


@dataclasses.dataclass(frozen=True)
class PriorRecipe:
    """What differs between the prior presets.

    Attributes:
        name: the preset's name (also the model's).
        vqvae: the VQ-VAE preset whose codes are modelled (a shipped name).
        image_shape: `(height, width, channels)` of the dataset's images.
        num_classes: classes of the dataset's labels (the conditioning).
        sample: the `vqkeras.samples` name that the preset's test checks.
        dataset: what the images are, for the model card, e.g. "MNIST".
        classifier: a classifier preset that judges the class-conditional
            samples, or None to skip that measurement.
        prior_class: the prior's class (a `vqkeras.models.CodePrior`).
        prior_arguments: its constructor's sizes and options, besides the
            codes, classes, image size and name (see the class).
        learning_rate: the initial learning rate of the cosine schedule.
        mirrored_training_images: also train on the codes of the training
            images mirrored left to right (twice the grids, for classes that
            look the same in a mirror, as CIFAR-10's; not for digits).
        depth: for an `RQVAE`'s stacked codes, the number of levels (coarse
            to fine) the prior models, which is then its `depth`; None for a
            model of one code per position.
    """

    name: str
    vqvae: str
    image_shape: tuple
    num_classes: int
    sample: str
    dataset: str
    classifier: str | None = None
    prior_class: type = PixelCNNPrior
    prior_arguments: dict = dataclasses.field(
        default_factory=lambda: {
            "filters": 64,
            "num_blocks": 4,
            "kernel_size": 5,
            "embedding_dim": 64,
        }
    )
    learning_rate: float = LEARNING_RATE
    mirrored_training_images: bool = False
    depth: int | None = None


def first_levels(codes, depth):
    """`codes` (a dict of arrays; `*_codes` entries are code grids) with only
    the first `depth` levels of stacked codes; as they are for `depth` None."""
    if depth is None:
        return codes
    return {
        name: values[..., :depth] if name.endswith("_codes") else values
        for name, values in codes.items()
    }


def parse_args(recipe, description, argv=None):
    parser = training_parser(description)
    parser.add_argument(
        "--vqvae", default=recipe.vqvae, help="VQ-VAE preset: a shipped name or a folder"
    )
    if recipe.classifier:
        parser.add_argument(
            "--classifier",
            default=recipe.classifier,
            help="classifier preset that judges the class-conditional samples",
        )
    parser.add_argument(
        "--initial-weights",
        default=None,
        help="prior preset (name or folder) of the same architecture whose weights "
        "training starts from (default: a random initialisation)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=recipe.learning_rate,
        help=f"peak of the cosine learning-rate schedule (default: {recipe.learning_rate:g})",
    )
    args = parse_training_args(parser, argv)
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    args.classifier = getattr(args, "classifier", None)
    return args


def export_codes(data_path, image_shape, vqvae, path, mirrored=False):
    """Code grids and labels of the train / validation / test splits, cached in
    `path`; with `mirrored`, also `train_mirrored_codes`: the codes of the
    training images mirrored left to right."""
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as codes:
            return {name: codes[name] for name in codes.files}
    data = load_npz_splits(data_path, image_shape, VALIDATION_SIZE)
    codes = {}
    for split in ("train", "val", "test"):
        codes[f"{split}_codes"] = encode_indices(vqvae, data[f"x_{split}"])
        codes[f"{split}_labels"] = data[f"y_{split}"]
    if mirrored:
        codes["train_mirrored_codes"] = encode_indices(vqvae, data["x_train"][:, :, ::-1])
    write_atomic(path, lambda f: np.savez(f, **codes), mode="wb")
    return codes


def save_samples(recipe, prior, vqvae, out, seed):
    """Samples 10 grids per class, decodes them and writes samples.npz / samples.png."""
    labels = np.repeat(np.arange(recipe.num_classes), SAMPLES_PER_CLASS).astype("int32")
    start = time.perf_counter()
    codes = keras.ops.convert_to_numpy(prior.sample(len(labels), labels=labels, seed=seed))
    sampling_time = time.perf_counter() - start
    images = np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(codes)), 0.0, 1.0)
    np.savez(os.path.join(out, "samples.npz"), codes=codes, labels=labels, images=images)
    height, width, channels = recipe.image_shape
    mosaic = images.reshape(recipe.num_classes, SAMPLES_PER_CLASS, height, width, channels)
    mosaic = mosaic.transpose(0, 2, 1, 3, 4).reshape(
        recipe.num_classes * height, SAMPLES_PER_CLASS * width, channels
    )
    keras.utils.save_img(os.path.join(out, "samples.png"), mosaic, scale=True)
    return sampling_time


def sample_check(recipe, prior, vqvae, vqvae_name, classifier_name=None):
    """The `sample_check` metadata entry, which the test suite checks: the NLL
    of the shipped sample's codes, to stay under a ceiling; for a prior whose
    loss is no likelihood (MaskGIT's masked cross-entropy is random), the
    agreement of `classifier_name` with a few class-conditional samples, to
    stay above a floor (empty without a classifier)."""
    if not prior.nll_is_likelihood:
        if classifier_name is None or not prior.num_classes:
            return {}
        agreement = conditional_sample_agreement(
            prior,
            vqvae,
            vqkeras.from_preset(classifier_name),
            samples_per_class=SAMPLE_CHECK_SAMPLES_PER_CLASS,
            seed=0,
        )["agreement"]
        return {
            "sample_check": {
                "vqvae": vqvae_name,
                "classifier": classifier_name,
                "samples_per_class": SAMPLE_CHECK_SAMPLES_PER_CLASS,
                "seed": 0,
                "agreement": round(agreement, 3),
                "agreement_floor": round(agreement - SAMPLE_AGREEMENT_MARGIN, 2),
            }
        }
    images, labels = vqkeras.samples.load(recipe.sample)
    codes = first_levels({"sample_codes": encode_indices(vqvae, images)}, recipe.depth)
    nll = evaluate_prior(prior, codes["sample_codes"], labels)["nll_nats_per_code"]
    return {
        "sample_check": {
            "sample": recipe.sample,
            "vqvae": vqvae_name,
            "nll_nats_per_code": round(nll, 4),
            "nll_ceiling_nats_per_code": round(nll + SAMPLE_NLL_MARGIN, 2),
        }
    }


def build_prior(recipe, num_embeddings, grid_shape, total_steps, learning_rate):
    """The prior of `recipe`, built and compiled with a cosine schedule from
    `learning_rate` over `total_steps`."""
    # MaskGIT's loss is no likelihood: it takes no image size for bits/dim.
    image_size = None if issubclass(recipe.prior_class, MaskGITPrior) else recipe.image_shape
    prior = recipe.prior_class(
        num_embeddings=num_embeddings,
        grid_shape=grid_shape,
        num_classes=recipe.num_classes,
        **recipe.prior_arguments,
        **({} if recipe.depth is None else {"depth": recipe.depth}),
        **({} if image_size is None else {"image_size": image_size}),
        name=recipe.name,
    )
    prior.build((None, *grid_shape))
    compile_with_cosine_adam(
        prior,
        total_steps,
        learning_rate=learning_rate,
        final_fraction=FINAL_LEARNING_RATE_FRACTION,
    )
    return prior


def load_initial_weights(prior, preset):
    """Copies the weights of the prior preset `preset` into `prior`, whose
    architecture (its config, the name aside) must be the same."""
    initial = vqkeras.from_preset(preset, expected_class=type(prior))
    expected, received = prior.get_config(), initial.get_config()
    expected.pop("name"), received.pop("name")
    if expected != received:
        differing = sorted(
            key
            for key in expected.keys() | received.keys()
            if expected.get(key) != received.get(key)
        )
        raise ValueError(
            f"--initial-weights {preset!r} holds another architecture than the recipe's "
            f"{type(prior).__name__}: its {differing} differ."
        )
    prior.set_weights(initial.get_weights())


def main(recipe, description, argv=None):
    """Trains, measures and saves the prior preset of `recipe` (see the module docstring)."""
    args = parse_args(recipe, description, argv)
    os.makedirs(args.out, exist_ok=True)

    keras.utils.set_random_seed(args.seed)
    vqvae = vqkeras.from_preset(args.vqvae)
    start = time.perf_counter()
    codes = export_codes(
        args.data,
        recipe.image_shape,
        vqvae,
        os.path.join(args.out, "codes.npz"),
        mirrored=recipe.mirrored_training_images,
    )
    export_time = time.perf_counter() - start
    codes = first_levels(codes, recipe.depth)
    train_codes, train_labels = codes["train_codes"], codes["train_labels"]
    if recipe.mirrored_training_images:
        train_codes = np.concatenate([train_codes, codes["train_mirrored_codes"]])
        train_labels = np.concatenate([train_labels, train_labels])
    grid_shape = train_codes.shape[1:3]
    steps_per_epoch = math.ceil(len(train_codes) / args.batch_size)
    prior = build_prior(
        recipe,
        vqvae.num_embeddings,
        grid_shape,
        args.schedule_epochs * steps_per_epoch,
        args.learning_rate,
    )
    if args.initial_weights:
        load_initial_weights(prior, args.initial_weights)
    print(
        f"backend={keras.config.backend()} grids train={len(train_codes)} "
        f"val={len(codes['val_codes'])} test={len(codes['test_codes'])} grid={grid_shape} "
        f"K={vqvae.num_embeddings} params={prior.count_params()}",
        flush=True,
    )

    start = time.perf_counter()
    history, timer = fit_resumable(
        prior,
        train_codes,
        args.out,
        y=train_labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(codes["val_codes"], codes["val_labels"]),
        time_limit_minutes=args.time_limit_minutes,
    )
    fit_time = time.perf_counter() - start

    test = evaluate_prior(
        prior, codes["test_codes"], codes["test_labels"], batch_size=EVAL_BATCH_SIZE
    )
    sampling_time = save_samples(recipe, prior, vqvae, args.out, args.seed)
    if args.classifier:
        test["conditional_sample_agreement"] = conditional_sample_agreement(
            prior,
            vqvae,
            vqkeras.from_preset(args.classifier),
            samples_per_class=AGREEMENT_SAMPLES_PER_CLASS,
            seed=args.seed,
        )
    metrics = {
        "backend": keras.config.backend(),
        "keras_version": keras.__version__,
        "vqkeras_version": vqkeras.__version__,
        "vqvae": args.vqvae,
        "epochs_this_session": len(history.epoch),
        "epochs_planned": args.epochs,
        "schedule_epochs": args.schedule_epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_grids": len(train_codes),
        "mirrored_training_images": recipe.mirrored_training_images,
        "validation_grids": len(codes["val_codes"]),
        "test_grids": len(codes["test_codes"]),
        "grid_shape": list(grid_shape),
        "depth": recipe.depth,
        "num_embeddings": vqvae.num_embeddings,
        "prior_class": recipe.prior_class.__name__,
        "prior_arguments": recipe.prior_arguments,
        "learning_rate": args.learning_rate,
        "initial_weights": args.initial_weights,
        "parameters": prior.count_params(),
        "code_export_time_s": export_time,
        "fit_time_this_session_s": fit_time,
        "final_validation": {
            name: values[-1] for name, values in history.history.items() if name.startswith("val_")
        },
        "sampling_time_100_grids_s": sampling_time,
        "test": test,
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    judged = f"; 1000 class-conditional samples judged by {args.classifier}"
    prior.save_to_preset(
        os.path.join(args.out, "preset"),
        metadata={
            "vqvae": args.vqvae,
            **({"classifier": args.classifier} if args.classifier else {}),
            **sample_check(recipe, prior, vqvae, args.vqvae, args.classifier),
            "dataset": f"{recipe.dataset} code grids of {args.vqvae}, train split minus its "
            f"last {VALIDATION_SIZE} images, with class labels"
            + (
                " (and the codes of those images mirrored)"
                if recipe.mirrored_training_images
                else ""
            ),
            "evaluation": f"{recipe.dataset} test split, all {len(codes['test_codes'])} images "
            "(codes and labels), vqkeras.evaluation.evaluate_prior"
            + (judged if args.classifier else ""),
            "recipe": f"zoo/{recipe.name}/recipe.py",
            "training": {
                "backend": metrics["backend"],
                "epochs": completed_epochs(args.out),
                "schedule_epochs": args.schedule_epochs,
                "learning_rate": args.learning_rate,
                **({"initial_weights": args.initial_weights} if args.initial_weights else {}),
                "batch_size": args.batch_size,
                "seed": args.seed,
                **timer.summary(),
            },
            "metrics": metrics["test"],
        },
        overwrite=True,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)
