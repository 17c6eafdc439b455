"""Options of a family or an architecture: a frozen dataclass whose fields
carry their default, their help text and how to read them from text.

One declaration serves Python (`FamilyOptions(num_embeddings=256)`), the
command line (`add_arguments` makes `--num-embeddings K` from it, so that
`vqkeras train --family X --help` lists X's options) and the run's records
(`as_dict` gives JSON values). Each class checks its values in
`__post_init__` and raises a `ValueError` naming the option and what it
received.

    @dataclasses.dataclass(frozen=True)
    class KLOptions(Options):
        kl_weight: float = option(1e-6, "weight of the KL term", parse=float)

        def __post_init__(self):
            self.check("kl_weight", validation.float_in_range, 0.0, float("inf"))
"""

import argparse
import dataclasses
import json

from vqkeras import validation


def option(default, help, *, parse=None, metavar=None, choices=None):
    """A field of an options dataclass.

    Args:
        default: the value when none is given (an immutable one: a tuple,
            not a list).
        help: one phrase for `--help`; the default is appended.
        parse: reads the command line's text: `int`, `float`, `str`,
            `int_list`, ... None for a flag (a bool option).
        metavar: the placeholder `--help` shows.
        choices: the values the option takes, if a fixed few.
    """
    metadata = {"help": help, "parse": parse, "metavar": metavar, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def int_list(text):
    """Positive integers separated by commas ("8,5,5,5" -> (8, 5, 5, 5))."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas (e.g. 64,128), received {text!r}"
        )
    return values


def float_pair(text):
    """Two numbers separated by a comma ("1,0.0625" -> (1.0, 0.0625))."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(
            f"expected two numbers separated by a comma (e.g. 1,0.0625), received {text!r}"
        )
    return values


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the options dataclasses (see the module docstring)."""

    def __post_init__(self):
        pass

    def check(self, name, checker, *args, optional=False, **kwargs):
        """Sets option `name` to `checker(name, value, *args, **kwargs)` (a
        function of `vqkeras.validation`), which raises on a bad value; an
        `optional` option may also be None."""
        value = getattr(self, name)
        if optional and value is None:
            return
        object.__setattr__(self, name, checker(name, value, *args, **kwargs))

    def as_dict(self):
        """The options as JSON values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values, owner):
        """`cls(**values)`, refusing names it does not have with the names it has.

        Args:
            values: option names and values; missing ones take their default.
            owner: what the options belong to, for the error, e.g. "family 'vae'".
        """
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"The {owner} has no option {', '.join(map(repr, unknown))}. "
                f"Its options: {', '.join(cls.names()) or 'none'}."
            )
        # JSON gives lists where the options hold tuples.
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


def positive_float(name, value):
    """`value` as a float > 0 (a `vqkeras.validation`-style checker)."""
    return validation.float_in_range(
        name, value, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
    )


def non_negative_float(name, value):
    """`value` as a float >= 0 (a `vqkeras.validation`-style checker)."""
    return validation.float_in_range(name, value, 0.0, float("inf"), high_inclusive=False)


def one_of(name, value, choices):
    """`value` if it is one of `choices`, else a ValueError naming them."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}"
        )
    return value


def flag(name):
    """The command-line flag of option `name` ("num_embeddings" -> "--num-embeddings")."""
    return "--" + name.replace("_", "-")


def _default_text(value):
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_arguments(parser, options_class, prefix, *, title, defaults=None):
    """Adds one flag per option of `options_class` to `parser`, in a group
    titled `title`.

    The values land in the namespace as `<prefix>.<option>`, only for the
    flags given (`options_from_args` reads them back), so that option names
    never collide with the command's own. `defaults` overrides the defaults
    shown in the help (a family's defaults for its architecture, say).
    """
    group = parser.add_argument_group(title)
    defaults = defaults or {}
    for field in dataclasses.fields(options_class):
        meta = field.metadata
        default = defaults.get(field.name, field.default)
        kwargs = {
            "dest": f"{prefix}.{field.name}",
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} (default: {_default_text(default)})",
        }
        if meta["parse"] is None:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=meta["parse"], metavar=meta["metavar"], choices=meta["choices"])
        group.add_argument(flag(field.name), **kwargs)


def options_from_args(args, prefix):
    """The options given on the command line under `prefix` (see
    `add_arguments`), as a dict."""
    start = prefix + "."
    return {name[len(start) :]: v for name, v in vars(args).items() if name.startswith(start)}
