"""The family registry: everything the library, the recipes and `vqkeras
train` know of a family lives in its entry.

A family is a class registered with `@register_family(name)`; the registry
holds one instance. It declares:

- `Options`: an options dataclass (`vqkeras.families.options`): defaults,
  checks with clear errors, help text (the flags of `vqkeras train --family
  NAME`);
- `build(...)`: the model, from its options (autoencoders also from the
  architecture's layers, priors from the code grid they model);
- `resolve(options, epochs=...)`: options whose default depends on the
  run, filled in before the run records them (Gumbel's anneal length);
- `callbacks(options, steps_per_epoch=...)`: what `fit` needs besides the
  run's own callbacks (Gumbel's temperature anneal);
- `group_learning_rates(options)`: the initial learning rate of each
  optimizer group, by group name, where it is not the run's;
- `after_training(model, images, seed=...)`: what it measures and stores in
  the model before it is saved (a KL-VAE's scaling factor);
- `card(options)`: the settings its model card records.

The base classes give the defaults: no callbacks, one learning rate, nothing
after training, every option on the card.
"""

import types

from vqkeras.families.options import Options

KINDS = ("autoencoder", "prior")

_REGISTRY = {}
FAMILIES = types.MappingProxyType(_REGISTRY)
"""Every registered family, read-only: name -> family (insertion order is the
order of the command-line choices)."""


class Family:
    """Base of the families (see the module docstring)."""

    name = None
    kind = None
    Options = Options
    # The cosine learning-rate schedule ends at this fraction of the initial rate.
    final_learning_rate_fraction = 0.1

    @property
    def summary(self):
        """The first paragraph of the class's docstring: what `--help` says of it."""
        return first_paragraph(type(self))

    def options(self, values=None):
        """The family's `Options` from a dict of option values (defaults for
        the others), checked."""
        return self.Options.from_dict(values, f"family {self.name!r}")

    def resolve(self, options, *, epochs):
        return options

    def callbacks(self, options, *, steps_per_epoch):
        return []

    def group_learning_rates(self, options):
        return {}

    def after_training(self, model, images, *, seed):
        return {}

    def card(self, options):
        return options.as_dict()

    def __repr__(self):
        return f"<{self.kind} family {self.name!r}>"


def first_paragraph(cls):
    """The first paragraph of `cls`'s docstring, on one line."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def register_family(name):
    """Class decorator that registers an instance of a `Family` subclass as `name`.

    Raises:
        ValueError: for an empty name, a name already registered, or a class
            of no known kind.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A family name must be a non-empty string. Received: name={name!r}.")

    def register(cls):
        if name in _REGISTRY:
            raise ValueError(
                f"A family named {name!r} is already registered. "
                f"Registered: {', '.join(_REGISTRY)}."
            )
        if cls.kind not in KINDS:
            raise ValueError(
                f"Family {name!r} must subclass a family kind ({', '.join(KINDS)}). "
                f"Received kind={cls.kind!r}."
            )
        family = cls()
        family.name = name
        _REGISTRY[name] = family
        return cls

    return register


def get_family(name, kind=None):
    """The family registered as `name` (of `kind`, if given), or a clear error."""
    names = families_of_kind(kind)
    if name not in names:
        what = f"{kind} family" if kind else "family"
        raise ValueError(f"Unknown {what} {name!r}. Expected one of: {', '.join(names)}.")
    return FAMILIES[name]


def families_of_kind(kind=None):
    """The names of the registered families of `kind` (all for None), in order."""
    return tuple(name for name, family in FAMILIES.items() if kind in (None, family.kind))
