"""Argument types and option groups shared by the commands of `vqkeras`."""

import argparse

SIZE_HELP = (
    "resize every image to HEIGHTxWIDTH pixels (bilinear; e.g. 32x32, the zoo's trained size); "
    "by default each image goes through the model at its own size"
)
FIXED_SIZE_HELP = (
    "resize every image to HEIGHTxWIDTH pixels (bilinear): the size the prior's code grid "
    "was made for (the model's trained size); images of another size are refused without it"
)
EVALUATE_SIZE_HELP = (
    "resize every image to HEIGHTxWIDTH pixels (bilinear); by default an autoencoder takes "
    "each image at its own size, while a prior or a classifier refuses images of another size "
    "than its own (--size gives them that size)"
)


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


def image_size(text):
    """`(height, width)` from "HxW", e.g. "32x32"."""
    height, x, width = text.lower().partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = (0, 0)
    if not x or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH in pixels, such as 32x32; received {text!r}"
        )
    return size


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
