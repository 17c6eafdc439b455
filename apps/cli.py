"""The `vqkeras` command: `vqkeras zoo list`, `vqkeras zoo info NAME`,
`vqkeras evaluate MODEL --input INPUT`."""

import argparse
import json
import os
import sys

# TensorFlow (imported by the commands) logs its start-up to stderr; keep
# stderr for our own messages unless the user asked for TF's.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def _zoo_list(args):
    from vqkeras import zoo

    for name in zoo.list():
        metrics = zoo.info(name).get("metrics", {})
        summary = ", ".join(
            f"{key}={metrics[key]:.4g}" for key in ("psnr_db", "codebook_usage") if key in metrics
        )
        print(f"{name}\t{summary}")
    return 0


def _zoo_info(args):
    from vqkeras import zoo

    print(json.dumps(zoo.info(args.name), indent=2, sort_keys=True))
    return 0


def _evaluate(args):
    from vqkeras.apps.inputs import load_images

    import vqkeras
    from vqkeras.evaluation import evaluate_reconstructions
    from vqkeras.file_io import write_json_atomic

    images, _ = load_images(args.input, split=args.split)
    if args.limit:
        images = images[: args.limit]
    model = vqkeras.from_preset(args.model)
    metrics = {
        "model": args.model,
        "input": args.input,
        "split": None if args.input.startswith("sample:") else args.split,
        **evaluate_reconstructions(model, images, batch_size=args.batch_size),
    }
    if args.out:
        write_json_atomic(args.out, metrics, overwrite=args.overwrite)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def build_parser():
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

    evaluate = commands.add_parser(
        "evaluate", help="reconstruction and codebook metrics of a model on images"
    )
    evaluate.add_argument("model", help="preset name (vqkeras zoo list) or preset folder")
    evaluate.add_argument(
        "--input",
        required=True,
        help="sample:mnist, sample:cifar10, or an .npz (keras.datasets layout or 'images')",
    )
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.add_argument("--limit", type=int, help="evaluate the first N images only")
    evaluate.add_argument("--batch-size", type=int, default=500)
    evaluate.add_argument("--out", help="also write the metrics to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except EXPECTED_ERRORS as e:
        if args.debug:
            raise
        print(f"vqkeras: error: {e}", file=sys.stderr)
        return 2
