"""Argument types and option groups shared by the commands of `vqkeras`."""

import argparse


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, received {text!r}")
    return value


def augmentation_list(text):
    from vqkeras.augmentation import AUGMENTATIONS

    names = [name.strip() for name in text.split(",")]
    if not names or any(name not in AUGMENTATIONS for name in names):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {', '.join(AUGMENTATIONS)}; received {text!r}"
        )
    return names


def add_data_options(parser, *, flags=("--input",), split="test", input_group=None):
    """The input options: `flags` (the first names the attribute), `--split`
    and `--limit`; the input goes into `input_group` (a mutually exclusive
    group, which makes it optional) if given."""
    from vqkeras.apps.inputs import INPUT_HELP

    (input_group or parser).add_argument(
        *flags,
        nargs="+",
        action="extend",
        required=input_group is None,
        metavar="INPUT",
        help=INPUT_HELP,
    )
    parser.add_argument(
        "--split",
        default=split,
        help=f"split of keras.datasets-layout .npz files and of tfds:NAME (default: {split})",
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="the first N images only")
