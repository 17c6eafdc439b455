"""The command-line options every zoo recipe shares: data, output folder,
epochs, batch size, seed, the learning rate and its schedule's length, a warm
start, a time limit and a smaller training set."""

import argparse


def training_parser(description, learning_rate):
    """An `ArgumentParser` with the shared options (`learning_rate`: the
    recipe's default); a recipe adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help=".npz in the keras.datasets layout")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--schedule-epochs",
        type=int,
        default=None,
        help="length of the cosine learning-rate schedule in epochs (default: --epochs)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help=f"peak of the cosine learning-rate schedule (default: {learning_rate:g})",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="PRESET_OR_DIR",
        help="a preset (name or folder) of the same architecture whose weights training starts "
        "from (default: the recipe's, or a random initialisation); metrics.json and the "
        "preset's metadata record it",
    )
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training examples only (for quick runs and timing)",
    )
    parser.add_argument(
        "--time-limit-minutes",
        type=float,
        default=None,
        help="stop after the epoch that passes this much training time in this session",
    )
    return parser


def parse_training_args(parser, argv=None):
    """Parses and checks the options: positive counts, a positive learning rate
    and time limit; `--schedule-epochs` defaults to `--epochs`."""
    args = parser.parse_args(argv)
    if args.schedule_epochs is None:
        args.schedule_epochs = args.epochs
    for name in ("epochs", "batch_size", "schedule_epochs", "limit_train"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.time_limit_minutes is not None and args.time_limit_minutes <= 0:
        parser.error(f"--time-limit-minutes must be positive, got {args.time_limit_minutes}")
    return args
