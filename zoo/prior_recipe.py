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

The prior is built by its family of the registry (`vqkeras.families`:
"pixelcnn-prior", "transformer-prior", "maskgit-prior", with the recipe's
options) and trained by `vqkeras.training.train_and_evaluate`, as `vqkeras
train --family <prior>` does.

Continuing a trained prior: `--init-from` (a prior preset, shipped name or
folder, of the same architecture) starts training from its weights instead of
a random initialisation, and `--learning-rate` sets the new cosine schedule's
peak (default: the recipe's). The preset's metadata records both, so a card
can state the whole chain of runs.

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
from vqkeras.codes import codes_by_name
from vqkeras.evaluation import (
    EVALUATION_BATCH_SIZE,
    conditional_sample_agreement,
    encode_indices,
    evaluate_prior,
)
from vqkeras.families import get_family
from vqkeras.file_io import write_atomic
from vqkeras.training import completed_epochs, load_npz_splits, train_and_evaluate
from vqkeras.zoo.recipe_options import parse_training_args, training_parser

LEARNING_RATE = 1e-3
VALIDATION_SIZE = 5000
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
        family: the prior family of `vqkeras.families.FAMILIES`, e.g.
            "pixelcnn-prior".
        vqvae: the VQ-VAE preset whose codes are modelled (a shipped name).
        image_shape: `(height, width, channels)` of the dataset's images.
        num_classes: classes of the dataset's labels (the conditioning).
        sample: the `vqkeras.samples` name that the preset's test checks.
        dataset: what the images are, for the model card, e.g. "MNIST".
        classifier: a classifier preset that judges the class-conditional
            samples, or None to skip that measurement.
        options: the family's options, by name (e.g. sizes; `depth`: the
            levels of an RQ-VAE's stacked codes, coarse to fine, that the
            prior models); the others take the family's defaults.
        learning_rate: the initial learning rate of the cosine schedule.
        mirrored_training_images: also train on the codes of the training
            images mirrored left to right (twice the grids, for classes that
            look the same in a mirror, as CIFAR-10's; not for digits).
    """

    name: str
    family: str
    vqvae: str
    image_shape: tuple
    num_classes: int
    sample: str
    dataset: str
    classifier: str | None = None
    options: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = LEARNING_RATE
    mirrored_training_images: bool = False


def parse_args(recipe, description, argv=None):
    parser = training_parser(description, recipe.learning_rate)
    parser.add_argument(
        "--vqvae", default=recipe.vqvae, help="VQ-VAE preset: a shipped name or a folder"
    )
    if recipe.classifier:
        parser.add_argument(
            "--classifier",
            default=recipe.classifier,
            help="classifier preset that judges the class-conditional samples",
        )
    args = parse_training_args(parser, argv)
    args.classifier = getattr(args, "classifier", None)
    return args


def export_codes(data_path, image_shape, vqvae, path, mirrored=False):
    """`{grid name: codes}` and labels of the train / validation / test splits
    (keys `<split>_<grid name>`, `<split>_labels`), cached in `path`; with
    `mirrored`, also the codes of the training images mirrored left to right
    (split `train_mirrored`)."""
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as codes:
            return {name: codes[name] for name in codes.files}
    data = load_npz_splits(data_path, image_shape, VALIDATION_SIZE)
    images = {split: data[f"x_{split}"] for split in ("train", "val", "test")}
    if mirrored:
        images["train_mirrored"] = data["x_train"][:, :, ::-1]
    codes = {}
    for split, split_images in images.items():
        by_name = codes_by_name(vqvae.code_grids(), encode_indices(vqvae, split_images))
        codes.update({f"{split}_{name}": grid_codes for name, grid_codes in by_name.items()})
    for split in ("train", "val", "test"):
        codes[f"{split}_labels"] = data[f"y_{split}"]
    write_atomic(path, lambda f: np.savez(f, **codes), mode="wb")
    return codes


def split_codes(codes, split, grids):
    """`{grid name: codes}` of `split` from what `export_codes` returned."""
    return {grid.name: codes[f"{split}_{grid.name}"] for grid in grids}


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


def sample_check(recipe, family, grid, prior, vqvae, vqvae_name, classifier_name=None):
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
    codes = codes_by_name(vqvae.code_grids(), encode_indices(vqvae, images))
    nll = evaluate_prior(prior, family.inputs(codes, grid, None), labels)["nll_nats_per_code"]
    return {
        "sample_check": {
            "sample": recipe.sample,
            "vqvae": vqvae_name,
            "nll_nats_per_code": round(nll, 4),
            "nll_ceiling_nats_per_code": round(nll + SAMPLE_NLL_MARGIN, 2),
        }
    }


def main(recipe, description, argv=None):
    """Trains, measures and saves the prior preset of `recipe` (see the module docstring)."""
    args = parse_args(recipe, description, argv)
    os.makedirs(args.out, exist_ok=True)
    family = get_family(recipe.family, kind="prior")
    options = family.resolve(family.options(recipe.options), epochs=args.schedule_epochs)

    keras.utils.set_random_seed(args.seed)
    vqvae = vqkeras.from_preset(args.vqvae)
    grid, condition = family.modelled_grids(vqvae.code_grids(), options)
    if condition is not None:
        raise ValueError(
            f"The prior recipe models codes that are not conditioned on another grid; "
            f"{args.vqvae}'s {grid.name!r} grid is conditioned on {condition.name!r}."
        )
    start = time.perf_counter()
    codes = export_codes(
        args.data,
        recipe.image_shape,
        vqvae,
        os.path.join(args.out, "codes.npz"),
        mirrored=recipe.mirrored_training_images,
    )
    export_time = time.perf_counter() - start
    grids = vqvae.code_grids()

    def inputs(split):
        return family.inputs(split_codes(codes, split, grids), grid, condition)

    train_codes, train_labels = inputs("train"), codes["train_labels"]
    if recipe.mirrored_training_images:
        train_codes = np.concatenate([train_codes, inputs("train_mirrored")])
        train_labels = np.concatenate([train_labels, train_labels])
    if args.limit_train is not None:
        train_codes, train_labels = (
            train_codes[: args.limit_train],
            train_labels[: args.limit_train],
        )
    val_codes, test_codes = inputs("val"), inputs("test")

    def build():
        prior = family.build(
            grid,
            options,
            num_classes=recipe.num_classes,
            image_shape=recipe.image_shape,
            name=recipe.name,
        )
        print(
            f"backend={keras.config.backend()} grids train={len(train_codes)} "
            f"val={len(val_codes)} test={len(test_codes)} grid={grid.shape} "
            f"K={grid.num_embeddings} params={prior.count_params()}",
            flush=True,
        )
        return prior

    def evaluate(prior):
        test = evaluate_prior(
            prior, test_codes, codes["test_labels"], batch_size=EVALUATION_BATCH_SIZE
        )
        test["sampling_time_100_grids_s"] = save_samples(recipe, prior, vqvae, args.out, args.seed)
        if args.classifier:
            test["conditional_sample_agreement"] = conditional_sample_agreement(
                prior,
                vqvae,
                vqkeras.from_preset(args.classifier),
                samples_per_class=AGREEMENT_SAMPLES_PER_CLASS,
                seed=args.seed,
            )
        return test

    def report(run):
        test = dict(run.evaluation)
        sampling_time = test.pop("sampling_time_100_grids_s")
        metrics = {
            "backend": keras.config.backend(),
            "keras_version": keras.__version__,
            "vqkeras_version": vqkeras.__version__,
            "vqvae": args.vqvae,
            "epochs_this_session": len(run.history.epoch),
            "epochs_planned": args.epochs,
            "schedule_epochs": args.schedule_epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "train_grids": len(train_codes),
            "mirrored_training_images": recipe.mirrored_training_images,
            "validation_grids": len(val_codes),
            "test_grids": len(test_codes),
            "grid_shape": list(grid.spatial_shape),
            "depth": grid.depth,
            "num_embeddings": grid.num_embeddings,
            "family": recipe.family,
            "prior_class": type(run.model).__name__,
            "options": options.as_dict(),
            "learning_rate": args.learning_rate,
            "init_from": args.init_from,
            "parameters": run.model.count_params(),
            "code_export_time_s": export_time,
            "fit_time_this_session_s": run.fit_time_s,
            "final_validation": {
                name: values[-1]
                for name, values in run.history.history.items()
                if name.startswith("val_")
            },
            "sampling_time_100_grids_s": sampling_time,
            "test": test,
        }
        judged = f"; 1000 class-conditional samples judged by {args.classifier}"
        mirrored = " (and the codes of those images mirrored)"
        metadata = {
            "vqvae": args.vqvae,
            **({"classifier": args.classifier} if args.classifier else {}),
            **sample_check(recipe, family, grid, run.model, vqvae, args.vqvae, args.classifier),
            "dataset": f"{recipe.dataset} code grids of {args.vqvae}, train split minus its "
            f"last {VALIDATION_SIZE} images, with class labels"
            + (mirrored if recipe.mirrored_training_images else ""),
            "evaluation": f"{recipe.dataset} test split, all {len(test_codes)} images "
            "(codes and labels), vqkeras.evaluation.evaluate_prior"
            + (judged if args.classifier else ""),
            "recipe": f"zoo/{recipe.name}/recipe.py",
            "training": {
                "backend": metrics["backend"],
                "epochs": completed_epochs(args.out),
                "schedule_epochs": args.schedule_epochs,
                "learning_rate": args.learning_rate,
                **({"initial_weights": args.init_from} if args.init_from else {}),
                "batch_size": args.batch_size,
                "seed": args.seed,
                **run.timer.summary(),
            },
            "metrics": test,
        }
        return metrics, metadata

    steps_per_epoch = math.ceil(len(train_codes) / args.batch_size)
    run = train_and_evaluate(
        build,
        train_codes,
        args.out,
        y=train_labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=evaluate,
        report=report,
        init_from=args.init_from,
        after_training=lambda prior: family.after_training(prior, train_codes, seed=args.seed),
        schedule_epochs=args.schedule_epochs,
        learning_rate=args.learning_rate,
        final_fraction=family.final_learning_rate_fraction,
        validation_data=(val_codes, codes["val_labels"]),
        time_limit_minutes=args.time_limit_minutes,
        callbacks=family.callbacks(options, steps_per_epoch=steps_per_epoch),
    )
    print(json.dumps(run.metrics, indent=2, sort_keys=True), flush=True)
