"""The recipe of the autoencoder presets (EMA VQ-VAEs, KL-VAEs): `zoo/<preset>/recipe.py`
gives the family, the sizes and the data; this module does the rest.

It builds the model with `vqkeras.models.factory.build_autoencoder` (an
"ema-vqvae" has dead-code restarts after 100 steps and a codebook seeded from
the first batch), trains it on the training split of a keras.datasets-layout .npz, holding out its last 5000
images for validation, with Adam and a cosine learning-rate decay to a tenth.
It then measures the model on the whole test split and writes to `--out`:
the files of `vqkeras.training.fit_resumable` (training_log.csv, timing.json,
checkpoints/, backup/), `metrics.json` (test-split metrics, training time and
throughput) and `preset/`, the trained model as a preset. A KL-VAE's
`scaling_factor` (1 / std of its latents, as latent diffusion uses) is
computed on the training images before it is saved. The run is
`vqkeras.training.train_and_evaluate`, as for `vqkeras train`.

`--time-limit-minutes` stops after the epoch that passes that much training
time; `--schedule-epochs` sets the length of the cosine schedule when it
differs from `--epochs` (to reproduce a run that a time limit stopped early).

Resuming: run the same command again after an interruption; training restarts
from the last completed epoch (weights, EMA codebook and optimizer state,
including the schedule's step), and rerunning a finished run only
re-evaluates. To start afresh, use a new `--out` folder; one that holds a
`preset/` but no run is refused, so that no preset is overwritten.

Test metrics (`metrics.json`, key `test`) come from
`vqkeras.evaluation.evaluate_reconstructions` (clipped reconstructions on the
[0, 1] scale, mean per-image PSNR, SSIM, codebook usage and perplexity over
the split). `images_per_second` is the median over epochs of the training
images divided by the epoch's training time (validation excluded; the first
epoch includes tracing).
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np

import vqkeras
from vqkeras import native_size
from vqkeras.evaluation import (
    EVALUATION_BATCH_SIZE,
    evaluate_reconstructions,
    frechet_distance_of_images,
)
from vqkeras.families import DEFAULT_ARCHITECTURE, get_family
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import load_npz_splits, sample_check, train_and_evaluate
from vqkeras.zoo.recipe_options import parse_training_args, training_parser

LEARNING_RATE = 1e-3
VALIDATION_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class AutoencoderRecipe:
    """What differs between the autoencoder presets.

    Attributes:
        name: the preset's name (also the model's).
        family: an autoencoder family of `vqkeras.families.FAMILIES`, e.g. "ema-vqvae".
        image_shape: `(height, width, channels)` of the dataset's images.
        sample: the `vqkeras.samples` name that the preset's test checks.
        dataset: what the training data is, for the model card.
        test_split: what the test data is, for the model card.
        options: the family's options (`FAMILIES[family].Options`), by
            name; the others take the family's defaults.
        architecture: the encoder/decoder architecture (a name of
            `vqkeras.families.ARCHITECTURES`).
        architecture_options: its options (e.g. `channels`), by name.
        learning_rate: the initial learning rate of the cosine decay.
        betas: Adam's `(beta_1, beta_2)`.
        init_from: a preset (name or folder) whose weights start the
            training (a VQGAN fine-tuned from a VQ-VAE; see
            `vqkeras.training.load_initial_weights`); None: a fresh
            initialization. `--init-from` overrides it.
        frechet_features: a classifier preset in whose features the Fréchet
            distance of the test reconstructions to the test images is
            measured (for the `init_from` model too, as the reference); None:
            not measured.
    """

    name: str
    family: str
    image_shape: tuple
    sample: str
    dataset: str
    test_split: str
    options: dict = dataclasses.field(default_factory=dict)
    architecture: str = DEFAULT_ARCHITECTURE
    architecture_options: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = LEARNING_RATE
    betas: tuple = (0.9, 0.999)
    init_from: str | None = None
    frechet_features: str | None = None


def build_model(recipe, options, seed):
    """The model of `recipe` with the family's `options`, built and uncompiled."""
    return build_autoencoder(
        recipe.family,
        recipe.image_shape,
        architecture=recipe.architecture,
        seed=seed,
        name=recipe.name,
        **options.as_dict(),
        **recipe.architecture_options,
    )


def main(recipe, description, argv=None):
    """Trains, measures and saves the preset of `recipe` (see the module docstring)."""
    args = parse_training_args(training_parser(description, recipe.learning_rate), argv)
    init_from = args.init_from or recipe.init_from
    os.makedirs(args.out, exist_ok=True)
    data = load_npz_splits(args.data, recipe.image_shape, VALIDATION_SIZE, args.limit_train)
    family = get_family(recipe.family, kind="autoencoder")
    options = family.resolve(family.options(recipe.options), epochs=args.schedule_epochs)

    def build():
        model = build_model(recipe, options, args.seed)
        print(
            f"backend={keras.config.backend()} train={len(data['x_train'])} "
            f"val={len(data['x_val'])} test={len(data['x_test'])} params={model.count_params()}",
            flush=True,
        )
        return model

    def evaluate(model):
        evaluation = evaluate_reconstructions(
            model, data["x_test"], batch_size=EVALUATION_BATCH_SIZE
        )
        if recipe.frechet_features is not None:
            evaluation.update(frechet_of_reconstructions(model, data["x_test"]))
            if init_from is not None:
                reference = frechet_of_reconstructions(
                    vqkeras.from_preset(init_from), data["x_test"]
                )
                evaluation[f"{init_from}_frechet_distance"] = reference["frechet_distance"]
        return evaluation

    def frechet_of_reconstructions(model, images):
        reconstructions = np.stack(native_size.reconstruct(model, images, EVALUATION_BATCH_SIZE))
        result = frechet_distance_of_images(
            images, reconstructions, recipe.frechet_features, batch_size=EVALUATION_BATCH_SIZE
        )
        return {
            "frechet_distance": result["frechet_distance"],
            "frechet_features": result["features"],
        }

    def report(run):
        metrics = {
            "backend": keras.config.backend(),
            "keras_version": keras.__version__,
            "vqkeras_version": vqkeras.__version__,
            "epochs_planned": args.epochs,
            "schedule_epochs": args.schedule_epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "betas": recipe.betas,
            "seed": args.seed,
            "train_images": len(data["x_train"]),
            "validation_images": len(data["x_val"]),
            "name": recipe.name,
            "family": recipe.family,
            "options": options.as_dict(),
            "architecture": recipe.architecture,
            "architecture_options": recipe.architecture_options,
            "init_from": init_from,
            "frechet_features": recipe.frechet_features,
            **run.measured,
            "parameters": run.model.count_params(),
            "fit_time_this_session_s": run.fit_time_s,
            **run.timer.summary(),
            "test": run.evaluation,
        }
        metadata = {
            # The test suite checks the shipped sample still reconstructs this well.
            "sample_check": sample_check(run.model, recipe.sample),
            "dataset": f"{recipe.dataset}, train split minus its last {VALIDATION_SIZE} images",
            "evaluation": f"{recipe.test_split}, all {len(data['x_test'])} images, "
            "vqkeras.evaluation",
            "recipe": f"zoo/{recipe.name}/recipe.py",
            "training": {
                **{
                    key: metrics[key]
                    for key in ("backend", "epochs", "batch_size", "seed", "training_time_s")
                },
                **({"init_from": init_from} if init_from else {}),
            },
            "metrics": metrics["test"],
        }
        return metrics, metadata

    steps_per_epoch = math.ceil(len(data["x_train"]) / args.batch_size)
    run = train_and_evaluate(
        build,
        data["x_train"],
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=evaluate,
        report=report,
        init_from=init_from,
        after_training=lambda model: family.after_training(model, data["x_train"], seed=args.seed),
        schedule_epochs=args.schedule_epochs,
        learning_rate=args.learning_rate,
        final_fraction=family.final_learning_rate_fraction,
        betas=recipe.betas,
        group_learning_rates=family.group_learning_rates(options),
        validation_data=(data["x_val"],),
        time_limit_minutes=args.time_limit_minutes,
        callbacks=family.callbacks(options, steps_per_epoch=steps_per_epoch),
    )
    print(json.dumps(run.metrics, indent=2, sort_keys=True), flush=True)
