"""The `vqkeras` command (launched by `vqkeras_cli`; also `python -m vqkeras.apps`):

    vqkeras zoo list | zoo info NAME     the shipped presets
    vqkeras evaluate MODEL --input ...   reconstruction and codebook metrics
    vqkeras reconstruct ...              images through a model: picture, per-image metrics
    vqkeras export-latents ...           integer code grids of images, and back (--decode)
    vqkeras sample ...                   new images from a prior over the codes
    vqkeras compress | decompress ...    images to a file of codes coded under a prior, and back
    vqkeras train ...                    fit a model of any family on your images, resumably
    vqkeras convert SOURCE --out DIR     a diffusers, Stable Diffusion or taming checkpoint to a preset
    vqkeras demo --out DIR               all of the above on the shipped samples, offline

Each command prints a JSON summary on stdout; warnings, notices and progress
bars go to stderr. Errors are one line on stderr with exit code 2 (`--debug`
shows the traceback, and TensorFlow's start-up lines that the launcher hides).
"""

import argparse
import json
import sys

from vqkeras.apps.arguments import (
    EVALUATE_SIZE_HELP,
    FIXED_SIZE_HELP,
    SIZE_HELP,
    add_data_options,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
)

# OSError covers missing, existing and unwritable files alike; ImportError an
# optional dependency a feature needs (TensorFlow for tfds inputs, --augment).
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError)


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


def _convert(args):
    from vqkeras.apps import convert

    return convert.run(args)


def _train(args):
    from vqkeras.apps import train

    return train.run(args)


def _add_model_option(parser, help="preset name (vqkeras zoo list) or preset folder"):
    parser.add_argument("--model", required=True, metavar="PRESET_OR_DIR", help=help)


def _add_input_options(parser, input_group=None, size_help=SIZE_HELP):
    add_data_options(parser, input_group=input_group)
    parser.add_argument("--size", type=image_size, metavar="HxW", help=size_help)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse images of another channel count than the model's (or, with --size, of "
        "another size), rather than converting or resizing them",
    )


def _add_run_options(parser, batch_size=256, what="images"):
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help=f"{what} per batch (default: {batch_size})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_output_options(parser, help, metavar="DIR"):
    parser.add_argument("--out", required=True, metavar=metavar, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _first_paragraph(module):
    return module.__doc__.split("\n\n")[0]


def build_parser(argv=None):
    from vqkeras.apps import (
        compress,
        convert,
        demo,
        evaluate,
        export_latents,
        reconstruct,
        sample,
        train,
    )

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
    _add_input_options(evaluating, size_help=EVALUATE_SIZE_HELP)
    _add_run_options(evaluating)
    evaluating.add_argument(
        "--vqvae", metavar="PRESET_OR_DIR", help="priors: the VQ model that makes the codes"
    )
    evaluating.add_argument(
        "--classifier", metavar="PRESET_OR_DIR", help="priors: the judge of conditional samples"
    )
    evaluating.add_argument(
        "--samples-per-class",
        type=non_negative_int,
        default=100,
        help="priors: conditional samples per class for the classifier (default: 100; 0: none)",
    )
    evaluating.add_argument(
        "--seed", type=non_negative_int, default=0, help="priors: sampling seed (default: 0)"
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
        "--num", type=positive_int, default=64, help="number of samples (default: 64)"
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
        "--top-k", type=positive_int, metavar="K", help="draw each code from the K likeliest"
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
        type=positive_int,
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
        type=non_negative_int,
        help="random seed: the same seed and batch size give the same samples on a backend",
    )
    _add_output_options(sampling, "output folder (created if needed)")
    _add_run_options(sampling, batch_size=64, what="samples")
    sampling.set_defaults(run=_sample)

    training = commands.add_parser(
        "train",
        help="train a model of any family (an autoencoder, or a prior over one's codes) on your "
        "images, resumably",
        description=train.__doc__,
        formatter_class=formatter,
    )
    # The family registry's options: those of the family argv names.
    train.add_arguments_for(training, sys.argv[1:] if argv is None else argv)
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
    _add_input_options(compressing, size_help=FIXED_SIZE_HELP)
    compressing.add_argument(
        "--label",
        type=non_negative_int,
        help="class of every image (class-conditional priors; default: the input's labels)",
    )
    compressing.add_argument(
        "--depth",
        type=positive_int,
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

    converting = commands.add_parser(
        "convert",
        help="a diffusers AutoencoderKL/VQModel folder, or a Stable Diffusion or taming "
        "checkpoint file, to a vqkeras preset",
        description=convert.__doc__,
        formatter_class=formatter,
    )
    converting.add_argument("source", help="the diffusers folder or the checkpoint file")
    converting.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="the square size the model is built for; it takes other sizes too (default: the "
        "diffusers config's sample_size, else 256)",
    )
    converting.add_argument(
        "--scaling-factor",
        type=positive_float,
        metavar="F",
        help="KL autoencoders: the latents' scaling factor, where the source lacks one or to "
        "replace it (Stable Diffusion 1.x and 2.x: 0.18215, SDXL: 0.13025)",
    )
    converting.add_argument(
        "--shift-factor",
        type=float,
        metavar="F",
        help="KL autoencoders: the latents' shift factor (default: the source's, else 0)",
    )
    _add_output_options(converting, "the preset folder to write")
    converting.set_defaults(run=_convert)

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
    parser = build_parser(argv)
    args, extras = parser.parse_known_args(argv)
    try:
        if extras and args.command == "train":
            from vqkeras.apps import train

            # A flag of another family: say whose it is.
            raise train.unknown_flags_error(args.family, extras)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
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
