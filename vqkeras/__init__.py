"""vqkeras: discrete and continuous image autoencoders for Keras 3.

Runs on the TensorFlow, JAX and PyTorch backends (set KERAS_BACKEND).
"""

from vqkeras import (
    callbacks,
    codes,
    distribution,
    evaluation,
    families,
    layers,
    losses,
    metrics,
    models,
    presets,
    samples,
    training,
    zoo,
)
from vqkeras.presets import from_preset
from vqkeras.version import __version__

__all__ = [
    "__version__",
    "callbacks",
    "codes",
    "distribution",
    "evaluation",
    "families",
    "from_preset",
    "layers",
    "losses",
    "metrics",
    "models",
    "presets",
    "samples",
    "training",
    "zoo",
]
