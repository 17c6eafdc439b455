"""`vqkeras evaluate`: the test figures of a model card, recomputed by anyone.

What is measured depends on the preset:

- an autoencoder: MSE, PSNR, SSIM and, for VQ models, codebook usage,
  perplexity and bits per image (as `vqkeras.evaluation.evaluate_reconstructions`
  measures them), each image at its own size (`vqkeras.native_size`) unless
  `--size HxW` resizes them; for image files, also each file's size, latent
  shapes, MSE, PSNR and SSIM in `per_image`;
- a prior (PixelCNN, Transformer or MaskGIT): the NLL of the images' codes
  under the prior, in nats/code and bits/dim (`evaluate_prior`; for a
  VQVAE2, of its top codes, or of its bottom codes given the top ones; for
  MaskGIT, whose loss is no likelihood, the cross-entropy of randomly
  masked codes instead), the codes made by `--vqvae`
  (default: the VQ model named in the prior's metadata), with the input's
  labels for a class-conditional prior; and the agreement of `--classifier`
  (default: the one in the metadata) with class-conditional samples
  (`conditional_sample_agreement`, `--samples-per-class`, 0 to skip);
- a classifier (e.g. `mnist_classifier`): its accuracy on the labelled input.

A prior (over the code grid of its VQ model's trained image size) and a
classifier take images of one size: other sizes are refused unless `--size`
gives that size.

`--frechet-features CLASSIFIER` adds, for an autoencoder, the Fréchet
distance between the input images and their reconstructions in the features
of a classifier preset (`frechet_distance_of_images`), and `frechet_features`
names the classifier and its layer ("mnist_classifier/flatten"). It is not FID (which
is measured in ImageNet Inception-v3 features): compare it only with
distances in the same features.
"""

import numpy as np

from vqkeras import presets
from vqkeras.apps.inputs import load_command_images, load_images_of_size, model_image_shape
from vqkeras.apps.models import load_model, reconstruction_report
from vqkeras.apps.outputs import check_outputs, describe_input
from vqkeras.codes import codes_by_name
from vqkeras.evaluation import (
    conditional_sample_agreement,
    encode_indices,
    evaluate_prior,
    frechet_distance_of_images,
)
from vqkeras.file_io import write_json_atomic
from vqkeras.models import CodePrior
from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.validation import to_unit_range


def _labels(inputs, what):
    if inputs.labels is None:
        raise ValueError(f"{what} needs labelled images; the input has no labels.")
    return inputs.labels.astype("int32")


def _prior_metrics(args, prior, metadata):
    vqvae_name = args.vqvae or metadata.get("vqvae")
    if vqvae_name is None:
        raise ValueError(f"{args.model!r} names no VQ model in its metadata: pass --vqvae.")
    vqvae = load_model(vqvae_name)
    channels, size = model_image_shape(vqvae)
    inputs = load_images_of_size(
        args, channels, size, f"Prior {args.model!r} (over the codes of {vqvae_name!r})"
    )
    labels = _labels(inputs, "A class-conditional prior") if prior.num_classes else None
    grids = vqvae.code_grids()
    by_name = {grid.name: grid for grid in grids}
    grid = next((g for g in grids if prior.fits(g, by_name.get(g.conditioned_on))), None)
    if grid is None:
        raise ValueError(f"Prior {args.model!r} models none of the code grids of {vqvae_name!r}.")
    codes = codes_by_name(grids, encode_indices(vqvae, inputs.images, args.batch_size))
    if grid.conditioned_on is None:
        codes = codes[grid.name]
    else:  # a VQVAE2's bottom prior, given the top codes
        codes = (codes[grid.name], codes[grid.conditioned_on])
    metrics = {"vqvae": vqvae_name, "skipped": len(inputs.skipped)}
    metrics.update(evaluate_prior(prior, codes, labels, batch_size=args.batch_size))
    classifier_name = args.classifier or metadata.get("classifier")
    # Samples of a single prior decode alone only for one-level models.
    if prior.num_classes and classifier_name and args.samples_per_class and len(grids) == 1:
        metrics["classifier"] = classifier_name
        metrics["conditional_sample_agreement"] = conditional_sample_agreement(
            prior,
            vqvae,
            presets.from_preset(classifier_name),
            samples_per_class=args.samples_per_class,
            seed=args.seed,
        )
    return metrics


def _classifier_metrics(args, classifier):
    input_shape = classifier.get_build_config()["input_shape"]
    inputs = load_images_of_size(
        args, input_shape[-1], tuple(input_shape[1:3]), f"Classifier {args.model!r}"
    )
    labels = _labels(inputs, "A classifier")
    scores = classifier.predict(to_unit_range(inputs.images), batch_size=args.batch_size, verbose=0)
    return {
        "images": len(labels),
        "skipped": len(inputs.skipped),
        "accuracy": float(np.mean(np.argmax(scores, axis=-1) == labels)),
    }


def _frechet_metrics(args, images, reconstructions):
    """The Fréchet distance of the reconstructions of `images` to them, and
    the features it is measured in."""
    if len({image.shape for image in images}) > 1:
        raise ValueError(
            "--frechet-features needs images of one size (the classifier's); the input's sizes "
            "differ: pass --size HxW."
        )
    result = frechet_distance_of_images(
        np.asarray(images),
        np.asarray(reconstructions),
        args.frechet_features,
        batch_size=args.batch_size,
    )
    return {
        "frechet_distance": result["frechet_distance"],
        "frechet_features": result["features"],
    }


def _autoencoder_metrics(args, model):
    inputs = load_command_images(args, model.image_channels)
    reconstructions, per_image, means = reconstruction_report(
        model, inputs, args.batch_size, args.quiet
    )
    metrics = {"skipped": len(inputs.skipped), **means}
    if args.frechet_features:
        metrics.update(_frechet_metrics(args, inputs.images, reconstructions))
    if inputs.names:  # image files: each one's figures
        metrics["per_image"] = per_image
    return metrics


def run(args):
    if args.out:
        check_outputs([args.out], args.overwrite)
    model = presets.from_preset(args.model)
    if args.frechet_features and not isinstance(model, AutoencoderModel):
        raise ValueError(
            f"--frechet-features measures an autoencoder's reconstructions; {args.model!r} "
            f"holds a {type(model).__name__}."
        )
    if isinstance(model, AutoencoderModel):
        metrics = _autoencoder_metrics(args, model)
    elif isinstance(model, CodePrior):
        metrics = _prior_metrics(args, model, presets.load_metadata(args.model))
    else:
        metrics = _classifier_metrics(args, model)
    metrics = {"model": args.model, **describe_input(args.input, args.split), **metrics}
    if args.out:
        write_json_atomic(args.out, metrics, overwrite=args.overwrite)
    return metrics
