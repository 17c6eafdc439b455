"""The vqkeras model zoo: pretrained presets shipped inside the package.

Each preset is a folder here holding config.json, model.weights.h5 and
metadata.json (see `vqkeras.presets`), a model card (README.md) and the recipe
that reproduces it. Installed, this folder is the `vqkeras.zoo` package.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def list():  # noqa: A001 - `vqkeras.zoo.list()` reads naturally
    """Names of the shipped presets, sorted."""
    return sorted(
        name
        for name in os.listdir(_HERE)
        if os.path.isfile(os.path.join(_HERE, name, "metadata.json"))
    )


def preset_dir(name):
    """The folder of a shipped preset."""
    if name not in list():
        raise ValueError(f"Unknown preset {name!r}. Shipped presets: {', '.join(list())}.")
    return os.path.join(_HERE, name)


def info(name):
    """The metadata of a shipped preset (versions, data, metrics), as a dict."""
    from vqkeras.presets import load_metadata

    return load_metadata(preset_dir(name))
