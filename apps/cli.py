"""The `vqkeras` command (launched by `vqkeras_cli`; also `python -m vqkeras.apps`):

    vqkeras zoo list | zoo info NAME     the shipped presets
    vqkeras evaluate MODEL --input ...   reconstruction and codebook metrics
    vqkeras reconstruct ...              images through a model: picture, per-image metrics
    vqkeras export-latents ...           integer code grids of images, and back (--decode)
    vqkeras sample ...                   new images from a prior over the codes
    vqkeras compress | decompress ...    images to a file of codes coded under a prior, and back
    vqkeras train ...                    fit a model of any family on your images, resumably
    vqkeras demo --out DIR               all of the above on the shipped samples, offline

Each command prints a JSON summary on stdout; warnings, notices and progress
bars go to stderr. Errors are one line on stderr with exit code 2 (`--debug`
shows the traceback, and TensorFlow's start-up lines that the launcher hides).
"""

import argparse
import json
import sys

# OSError covers missing, existing and unwritable files alike.
EXPECTED_ERRORS = (ValueError, TypeError, OSError)


def _zoo_list(args):
    from vqkeras import zoo

    for name in zoo.list():
        info = zoo.info(name)
        metrics = info.get("metrics", {})
        headline = ("psnr_db", "ssim", "codebook_usage", "nll_nats_per_code", "accuracy")
        summary = ", ".join(f"{key}={metrics[key]:.4g}" for key in headline if key in metrics)
        print(f"{name}\t{info['class_name']}\t{summary}")
    return 0


def _zoo_info(args):
    from vqkeras import zoo

    print(json.dumps(zoo.info(args.name), indent=2, sort_keys=True))
    return 0


def _evaluate(args):
    from vqkeras.apps import evaluate

    return evaluate.run(args)


def _reconstruct(args):
    from vqkeras.apps import reconstruct

    return reconstruct.run(args)


def _export_latents(args):
    from vqkeras.apps import export_latents

    if args.decode:
        return export_latents.decode(args)
    return export_latents.export(args)


def _sample(args):
    from vqkeras.apps import sample

    return sample.run(args)


def _compress(args):
    from vqkeras.apps import compress

    return compress.compress(args)


def _decompress(args):
    from vqkeras.apps import compress

    return compress.decompress(args)


def _demo(args):
    from vqkeras.apps import demo

    return demo.run(args)


def _train(args):
    from vqkeras.apps import train

    return train.run(args)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def _channel_list(text):
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas (e.g. 64,128), received {text!r}"
        )
    return values


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, received {text!r}")
    return value


def _augmentation_list(text):
    from vqkeras.augmentation import AUGMENTATIONS

    names = [name.strip() for name in text.split(",")]
    if not names or any(name not in AUGMENTATIONS for name in names):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {', '.join(AUGMENTATIONS)}; received {text!r}"
        )
    return names


def _add_model_option(parser, help="preset name (vqkeras zoo list) or preset folder"):
    parser.add_argument("--model", required=True, metavar="PRESET_OR_DIR", help=help)


def _add_input_options(parser, input_group=None):
    from vqkeras.apps.inputs import INPUT_HELP

    (input_group or parser).add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=input_group is None,
        metavar="INPUT",
        help=INPUT_HELP,
    )
    parser.add_argument(
        "--split",
        default="test",
        help="split of keras.datasets-layout .npz files and of tfds:NAME (default: test)",
    )
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="the first N images only")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse images of another size or channel count than the model's, rather than "
        "resizing (bilinear) or converting them",
    )


def _add_run_options(parser, batch_size=256, what="images"):
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        help=f"{what} per batch (default: {batch_size})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_output_options(parser, help, metavar="DIR"):
    parser.add_argument("--out", required=True, metavar=metavar, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _latent_dim_defaults(families):
    """E.g. "4 for ae, vae; 64 for vqvae": each family's default latent channels."""
    names = {}
    for family in families.values():
        names.setdefault(family.default_latent_dim, []).append(family.name)
    return "; ".join(f"{dim} for {', '.join(group)}" for dim, group in names.items())


def _first_paragraph(module):
    return module.__doc__.split("\n\n")[0]


def build_parser():
    from vqkeras.apps import compress, demo, evaluate, export_latents, reconstruct, sample, train
    from vqkeras.apps.inputs import INPUT_HELP
    from vqkeras.augmentation import AUGMENTATIONS
    from vqkeras.layers.base_vector_quantizer import GRADIENT_ESTIMATORS
    from vqkeras.models.factory import CODEBOOK_OPTIONS, FAMILIES, families_taking

    parser = argparse.ArgumentParser(
        prog="vqkeras", description="Image autoencoders and their zoo, from the command line."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    zoo = commands.add_parser("zoo", help="list and describe the shipped presets")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="names of the shipped presets").set_defaults(run=_zoo_list)
    info = zoo_commands.add_parser("info", help="metadata of a preset (metrics, data, versions)")
    info.add_argument("name")
    info.set_defaults(run=_zoo_info)

    evaluating = commands.add_parser(
        "evaluate",
        help="a preset's test figures: reconstruction, prior NLL or classifier accuracy",
        description=evaluate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluating.add_argument("model", help="preset name (vqkeras zoo list) or preset folder")
    _add_input_options(evaluating)
    _add_run_options(evaluating)
    evaluating.add_argument(
        "--vqvae", metavar="PRESET_OR_DIR", help="priors: the VQ model that makes the codes"
    )
    evaluating.add_argument(
        "--classifier", metavar="PRESET_OR_DIR", help="priors: the judge of conditional samples"
    )
    evaluating.add_argument(
        "--samples-per-class",
        type=_non_negative_int,
        default=100,
        help="priors: conditional samples per class for the classifier (default: 100; 0: none)",
    )
    evaluating.add_argument(
        "--seed", type=_non_negative_int, default=0, help="priors: sampling seed (default: 0)"
    )
    evaluating.add_argument(
        "--frechet-features",
        metavar="CLASSIFIER",
        help="autoencoders: also the Frechet distance of the reconstructions to the images in "
        "the features of this classifier preset (e.g. mnist_classifier; its layer named "
        "'features', else the one before its output; not FID)",
    )
    evaluating.add_argument("--out", help="also write the metrics to this JSON file")
    evaluating.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    evaluating.set_defaults(run=_evaluate)

    formatter = argparse.RawDescriptionHelpFormatter
    reconstructing = commands.add_parser(
        "reconstruct",
        help="reconstruct images: a picture, per-image metrics and a summary",
        description=reconstruct.__doc__,
        formatter_class=formatter,
    )
    _add_model_option(reconstructing)
    _add_input_options(reconstructing)
    _add_output_options(reconstructing, "output folder (created if needed)")
    _add_run_options(reconstructing)
    reconstructing.set_defaults(run=_reconstruct)

    exporting = commands.add_parser(
        "export-latents",
        help="the integer code grids of images (or, with --decode, images from codes)",
        description=export_latents.__doc__,
        formatter_class=formatter,
    )
    _add_model_option(exporting, help="VQ model: preset name or preset folder")
    sources = exporting.add_mutually_exclusive_group(required=True)
    _add_input_options(exporting, sources)
    sources.add_argument(
        "--decode", metavar="CODES", help="decode this codes file (.npz, .npy or .jsonl) instead"
    )
    _add_output_options(
        exporting,
        "codes file to write (e.g. codes.npz); with --decode, an output folder",
        metavar="PATH",
    )
    exporting.add_argument(
        "--format",
        choices=export_latents.FORMATS,
        help="format of the codes file (default: from the --out suffix)",
    )
    _add_run_options(exporting)
    exporting.set_defaults(run=_export_latents)

    sampling = commands.add_parser(
        "sample",
        help="new images from a prior (PixelCNN, Transformer, MaskGIT) over a VQ model's codes",
        description=sample.__doc__,
        formatter_class=formatter,
    )
    _add_model_option(sampling, help="the VQ model that decodes the codes: preset or folder")
    sampling.add_argument(
        "--prior",
        required=True,
        metavar="PRESET_OR_DIR",
        help="prior preset or folder (for a VQVAE2: the top prior)",
    )
    sampling.add_argument(
        "--bottom-prior",
        metavar="PRESET_OR_DIR",
        help="VQVAE2 only: the prior of the bottom grid, conditioned on the top one",
    )
    sampling.add_argument(
        "--num", type=_positive_int, default=64, help="number of samples (default: 64)"
    )
    sampling.add_argument(
        "--label",
        type=int,
        help="class of every sample (class-conditional priors; default: the classes in turn)",
    )
    sampling.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="divides the logits: below 1 gives likelier, less varied codes (default: 1)",
    )
    sampling.add_argument(
        "--top-k", type=_positive_int, metavar="K", help="draw each code from the K likeliest"
    )
    sampling.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="nucleus sampling: draw from the likeliest codes whose probability reaches P",
    )
    sampling.add_argument(
        "--guidance-scale",
        type=float,
        metavar="S",
        help="Transformer priors: classifier-free guidance scale (1: plain conditional)",
    )
    sampling.add_argument(
        "--num-steps",
        type=_positive_int,
        metavar="N",
        help="MaskGIT priors: parallel decoding steps (default: 8)",
    )
    sampling.add_argument(
        "--choice-temperature",
        type=float,
        metavar="T",
        help="MaskGIT priors: scale of the noise on the confidences (default: 4.5)",
    )
    sampling.add_argument(
        "--seed",
        type=_non_negative_int,
        help="random seed: the same seed and batch size give the same samples on a backend",
    )
    _add_output_options(sampling, "output folder (created if needed)")
    _add_run_options(sampling, batch_size=64, what="samples")
    sampling.set_defaults(run=_sample)

    training = commands.add_parser(
        "train",
        help="train an autoencoder of any family on your own images, resumably",
        description=train.__doc__,
        formatter_class=formatter,
    )
    # The factory's registry: a registered family is a choice.
    training.add_argument("--family", required=True, choices=FAMILIES, help="model family")
    # --input too: the other commands' name for the same thing.
    training.add_argument(
        "--data",
        "--input",
        dest="data",
        required=True,
        nargs="+",
        action="extend",
        metavar="INPUT",
        help=INPUT_HELP,
    )
    training.add_argument(
        "--split",
        default="train",
        help="split of keras.datasets-layout .npz files and of tfds:NAME (default: train)",
    )
    training.add_argument(
        "--limit", type=_positive_int, metavar="N", help="the first N images only"
    )
    training.add_argument(
        "--out", required=True, metavar="DIR", help="run folder (created if needed)"
    )
    training.add_argument("--epochs", type=_positive_int, default=10, help="(default: 10)")
    training.add_argument("--batch-size", type=_positive_int, default=64, help="(default: 64)")
    training.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's initial learning rate, cosine-decayed to a tenth (default: 1e-3)",
    )
    training.add_argument(
        "--adam-betas",
        type=float,
        nargs=2,
        metavar=("BETA_1", "BETA_2"),
        help="Adam's beta_1 and beta_2, of every optimizer (default: 0.9 0.999; GANs often "
        "train with 0.5 0.9)",
    )
    training.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of the images held out, at random (default: 0.1)",
    )
    training.add_argument(
        "--channels",
        type=_channel_list,
        default=(64, 128),
        metavar="C1,C2,...",
        help="channels of the encoder's stride-2 convolutions; their count is the number of "
        "halvings of the image size (default: 64,128)",
    )
    training.add_argument(
        "--residual-blocks", type=_non_negative_int, default=1, help="(default: 1)"
    )
    training.add_argument(
        "--latent-dim",
        type=_positive_int,
        help=f"latent channels (default: {_latent_dim_defaults(FAMILIES)})",
    )
    training.add_argument(
        "--num-embeddings",
        type=_positive_int,
        default=512,
        metavar="K",
        help="codebook size of the VQ families (default: 512)",
    )
    training.add_argument(
        "--depth", type=_positive_int, default=4, help="rqvae levels (default: 4)"
    )
    training.add_argument("--beta", type=float, default=1.0, help="vae KL weight (default: 1)")
    training.add_argument(
        "--kl-weight", type=float, default=1e-6, help="klvae KL weight (default: 1e-6)"
    )
    training.add_argument(
        "--gumbel-temperature",
        type=_positive_float,
        nargs=2,
        metavar=("START", "END"),
        help="gumbel-vae: temperatures of the first step and of the end of the anneal "
        "(default: 1 0.0625)",
    )
    training.add_argument(
        "--gumbel-anneal-epochs",
        type=_positive_int,
        metavar="EPOCHS",
        help="gumbel-vae: epochs of the exponential anneal (default: --epochs)",
    )
    # Each flag's help names the families that take it, from the registry.
    takers = {option: ", ".join(families_taking(option)) for option in CODEBOOK_OPTIONS}
    training.add_argument(
        "--code-dim",
        type=_positive_int,
        metavar="N",
        help=f"{takers['code_dim']}: width of the codes, with projections in and out of "
        "the latent channels (default: the latent channels, no projections)",
    )
    training.add_argument(
        "--normalize-codes",
        action="store_true",
        default=None,
        help=f"{takers['normalize_codes']}: l2-normalised latents and codes (cosine similarity)",
    )
    training.add_argument(
        "--kmeans-init",
        action="store_true",
        default=None,
        help=f"{takers['kmeans_init']}: codebooks initialised by k-means on the first "
        "training batch",
    )
    training.add_argument(
        "--gradient-estimator",
        choices=GRADIENT_ESTIMATORS,
        help=f"{takers['gradient_estimator']}: gradient through the quantizer, the "
        "straight-through estimator or the rotation trick (default: straight_through)",
    )
    training.add_argument(
        "--discriminator-start",
        type=_non_negative_int,
        default=0,
        metavar="STEPS",
        help="vqgan, adversarial-klvae: training steps before the adversarial terms count "
        "(default: 0)",
    )
    training.add_argument(
        "--adversarial-weight",
        type=float,
        default=0.8,
        help="vqgan, adversarial-klvae: factor of the adaptive weight of the autoencoder's "
        "adversarial term; "
        "0 trains the discriminator without it (default: 0.8)",
    )
    training.add_argument(
        "--perceptual-features",
        metavar="PRESET_OR_DIR",
        help="vqgan, adversarial-klvae: add a perceptual loss in the Conv2D features of this "
        "classifier preset, "
        "which takes images of the training images' size (e.g. mnist_classifier for 28x28 "
        "digits; default: none)",
    )
    training.add_argument(
        "--perceptual-weight",
        type=_positive_float,
        metavar="W",
        help="vqgan, adversarial-klvae: the factor of the perceptual loss against the L1 pixel "
        "loss (default: 1; needs --perceptual-features)",
    )
    training.add_argument(
        "--discriminator-learning-rate",
        type=_positive_float,
        metavar="RATE",
        help="vqgan, adversarial-klvae: the discriminator's initial learning rate, with the "
        "same cosine decay (default: --learning-rate)",
    )
    training.add_argument("--seed", type=_non_negative_int, default=0, help="(default: 0)")
    training.add_argument(
        "--distribute",
        action="store_true",
        help="train data-parallel on all local devices, --batch-size being the global batch "
        "(JAX and TensorFlow; see docs/distributed.md)",
    )
    training.add_argument(
        "--augment",
        nargs="?",
        const="flip,shift",
        type=_augmentation_list,
        metavar="KINDS",
        help="augment the training images in the input pipeline: a comma-separated subset of "
        + "; ".join(f"{name}: {what}" for name, what in AUGMENTATIONS.items())
        + " (bare --augment: flip,shift; digits and text want shift only; default: none)",
    )
    training.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    training.set_defaults(run=_train)

    compressing = commands.add_parser(
        "compress",
        help="compress images: a VQ model's codes, range-coded under a prior",
        description=compress.__doc__,
        formatter_class=formatter,
    )
    _add_model_option(compressing, help="VQVAE or RQVAE: preset name or preset folder")
    compressing.add_argument(
        "--prior",
        required=True,
        metavar="PRESET_OR_DIR",
        help="PixelCNN or Transformer prior over its codes",
    )
    _add_input_options(compressing)
    compressing.add_argument(
        "--label",
        type=_non_negative_int,
        help="class of every image (class-conditional priors; default: the input's labels)",
    )
    compressing.add_argument(
        "--depth",
        type=_positive_int,
        help="RQVAE: code the first DEPTH levels only (the prior must model that many)",
    )
    _add_output_options(compressing, "the compressed file to write", metavar="FILE")
    _add_run_options(compressing, batch_size=256)
    compressing.set_defaults(run=_compress)

    decompressing = commands.add_parser(
        "decompress",
        help="decompress a file of `vqkeras compress` to images",
        description=compress.__doc__,
        formatter_class=formatter,
    )
    decompressing.add_argument("file", help="a file written by vqkeras compress")
    decompressing.add_argument(
        "--model", metavar="PRESET_OR_DIR", help="the model (default: the one the file names)"
    )
    decompressing.add_argument(
        "--prior", metavar="PRESET_OR_DIR", help="the prior (default: the one the file names)"
    )
    _add_output_options(decompressing, "output folder (created if needed)")
    _add_run_options(decompressing, batch_size=256)
    decompressing.set_defaults(run=_decompress)

    demonstrating = commands.add_parser(
        "demo",
        help="the zoo models on the shipped samples: reconstructions, codes, samples",
        description=demo.__doc__,
        formatter_class=formatter,
    )
    _add_output_options(demonstrating, "output folder (created if needed)")
    demonstrating.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except EXPECTED_ERRORS as e:
        if args.debug:
            raise
        # One line, whatever the message: scripts read the last line of stderr.
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"vqkeras: error: {message}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    return result
