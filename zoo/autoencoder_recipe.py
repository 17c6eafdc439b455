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
import os

import keras

import vqkeras
from vqkeras.apps.models import reconstruct
from vqkeras.evaluation import evaluate_reconstructions, frechet_distance_of_images
from vqkeras.layers import PerceptualLoss
from vqkeras.models import KLVAE
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import load_npz_splits, sample_check, train_and_evaluate
from vqkeras.zoo.recipe_options import parse_training_args, training_parser

LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE_FRACTION = 0.1
VALIDATION_SIZE = 5000
EVAL_BATCH_SIZE = 500


@dataclasses.dataclass(frozen=True)
class AutoencoderRecipe:
    """What differs between the autoencoder presets.

    Attributes:
        name: the preset's name (also the model's).
        family: a `vqkeras.models.factory.FAMILIES` name, e.g. "ema-vqvae".
        image_shape: `(height, width, channels)` of the dataset's images.
        latent_dim: latent channels: code vector size D, or the channels of a
            KL-VAE's latent sample.
        channels: the encoder's downsampling channels (the decoder mirrors them).
        num_residual_blocks: residual blocks of the encoder and the decoder.
        residual_channels: their hidden channels (None: the encoder's default).
        sample: the `vqkeras.samples` name that the preset's test checks.
        dataset: what the training data is, for the model card.
        test_split: what the test data is, for the model card.
        num_embeddings: codebook size K of a VQ family.
        kl_weight: the KL weight of a KL-VAE.
        depth: quantization levels of an RQ-VAE.
        levels: the per-channel levels of an FSQ VQ-VAE ("fsq-vae").
        learning_rate: the initial learning rate of the cosine decay.
        betas: Adam's `(beta_1, beta_2)`.
        init_from: a preset (name or folder) of the same architecture whose
            encoder, quantizer and decoder weights start the training (a
            VQGAN fine-tuned from a VQ-VAE); None: a fresh initialization.
        perceptual_features: an adversarial family's perceptual loss: the
            classifier preset whose convolutions it compares
            (`PerceptualLoss.from_classifier`); None: no perceptual term.
        perceptual_weight: an adversarial family's factor of the perceptual
            term (None: the family's default, 1).
        discriminator_start: an adversarial family's training steps before
            the discriminator's terms count.
        discriminator_weight: an adversarial family's factor of the adaptive
            weight.
        discriminator_learning_rate: an adversarial family's discriminator's
            initial learning rate (None: the autoencoder's).
        frechet_features: a classifier preset in whose features the Fréchet
            distance of the test reconstructions to the test images is
            measured (for the `init_from` model too, as the reference); None:
            not measured.
    """

    name: str
    family: str
    image_shape: tuple
    latent_dim: int
    channels: tuple
    num_residual_blocks: int
    residual_channels: int | None
    sample: str
    dataset: str
    test_split: str
    num_embeddings: int | None = None
    kl_weight: float | None = None
    depth: int | None = None
    levels: tuple | None = None
    learning_rate: float = LEARNING_RATE
    betas: tuple = (0.9, 0.999)
    init_from: str | None = None
    perceptual_features: str | None = None
    perceptual_weight: float | None = None
    discriminator_start: int | None = None
    discriminator_weight: float | None = None
    discriminator_learning_rate: float | None = None
    frechet_features: str | None = None

    def family_arguments(self):
        """The family's own arguments of `build_autoencoder`."""
        names = ("num_embeddings", "kl_weight", "depth", "levels", "discriminator_start")
        names += ("discriminator_weight", "perceptual_weight")
        arguments = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.perceptual_features is not None:
            arguments["perceptual_loss"] = PerceptualLoss.from_classifier(self.perceptual_features)
        return arguments


def parse_args(description, argv=None):
    parser = training_parser(description)
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training images only (for quick runs and timing)",
    )
    return parse_training_args(parser, argv)


def build_model(recipe, seed):
    """The model of `recipe`, built and uncompiled, with the weights of
    `recipe.init_from` where it names a preset."""
    model = build_autoencoder(
        recipe.family,
        recipe.image_shape,
        latent_dim=recipe.latent_dim,
        channels=recipe.channels,
        num_residual_blocks=recipe.num_residual_blocks,
        residual_channels=recipe.residual_channels,
        seed=seed,
        name=recipe.name,
        **recipe.family_arguments(),
    )
    if recipe.init_from is not None:
        copy_autoencoder_weights(vqkeras.from_preset(recipe.init_from), model)
    return model


def copy_autoencoder_weights(source, target):
    """Sets `target`'s encoder, quantizer (where both have one) and decoder
    to `source`'s weights: a VQGAN started from a trained VQ-VAE. Raises a
    ValueError naming the part whose variables differ in shape."""
    parts = ["encoder", "quantizer", "decoder"]
    for part in parts if hasattr(source, "quantizer") else ["encoder", "decoder"]:
        weights = getattr(source, part).get_weights()
        layer = getattr(target, part)
        shapes = [tuple(w.shape) for w in weights], [tuple(v.shape) for v in layer.weights]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"Cannot start '{target.name}' from '{source.name}': their {part}s differ. "
                f"Source variable shapes: {shapes[0]}; target: {shapes[1]}."
            )
        layer.set_weights(weights)


def main(recipe, description, argv=None):
    """Trains, measures and saves the preset of `recipe` (see the module docstring)."""
    args = parse_args(description, argv)
    os.makedirs(args.out, exist_ok=True)
    data = load_npz_splits(args.data, recipe.image_shape, VALIDATION_SIZE, args.limit_train)

    def build():
        model = build_model(recipe, args.seed)
        print(
            f"backend={keras.config.backend()} train={len(data['x_train'])} "
            f"val={len(data['x_val'])} test={len(data['x_test'])} params={model.count_params()}",
            flush=True,
        )
        return model

    def evaluate(model):
        if isinstance(model, KLVAE):
            # Set on the model before it is measured and saved: the preset ships it.
            model.scaling_factor = model.compute_scaling_factor(data["x_train"], seed=args.seed)
        evaluation = evaluate_reconstructions(model, data["x_test"], batch_size=EVAL_BATCH_SIZE)
        if recipe.frechet_features is not None:
            evaluation.update(frechet_of_reconstructions(model, data["x_test"]))
            if recipe.init_from is not None:
                reference = frechet_of_reconstructions(
                    vqkeras.from_preset(recipe.init_from), data["x_test"]
                )
                evaluation[f"{recipe.init_from}_frechet_distance"] = reference["frechet_distance"]
        return evaluation

    def frechet_of_reconstructions(model, images):
        reconstructions = reconstruct(model, images, EVAL_BATCH_SIZE, quiet=True)
        result = frechet_distance_of_images(
            images, reconstructions, recipe.frechet_features, batch_size=EVAL_BATCH_SIZE
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
            "seed": args.seed,
            "train_images": len(data["x_train"]),
            "validation_images": len(data["x_val"]),
            **{
                key: value
                for key, value in dataclasses.asdict(recipe).items()
                if key not in ("dataset", "test_split")
            },
            "scaling_factor": getattr(run.model, "scaling_factor", None),
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
                key: metrics[key]
                for key in ("backend", "epochs", "batch_size", "seed", "training_time_s")
            },
            "metrics": metrics["test"],
        }
        return metrics, metadata

    run = train_and_evaluate(
        build,
        data["x_train"],
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=evaluate,
        report=report,
        schedule_epochs=args.schedule_epochs,
        learning_rate=recipe.learning_rate,
        final_fraction=FINAL_LEARNING_RATE_FRACTION,
        betas=recipe.betas,
        discriminator_learning_rate=recipe.discriminator_learning_rate,
        validation_data=(data["x_val"],),
        time_limit_minutes=args.time_limit_minutes,
    )
    print(json.dumps(run.metrics, indent=2, sort_keys=True), flush=True)
