"""TensorFlow where it is needed only.

vqkeras runs on JAX and PyTorch without TensorFlow, which many GPU machines
lack (and whose CUDA libraries can clash with theirs): TensorFlow is the
`tensorflow` extra. A few features do need it whatever the Keras backend: the
tf.data augmentation pipeline (`vqkeras.augmentation`), tensorflow-datasets
inputs (`tfds:NAME`) and TensorBoard logs. They import it through
`require_tensorflow`, which says what to install when it is missing.
"""

import importlib

INSTALL_HINT = (
    "vqkeras's `tensorflow` extra (pip install '.[tensorflow]' in a clone of vqkeras), "
    "or pip install tensorflow tensorflow-datasets"
)

# The distributions that bring each module, for the error message.
PACKAGES = {
    "tensorflow": "TensorFlow (tensorflow, or tensorflow-cpu)",
    "tensorflow_datasets": "tensorflow-datasets and TensorFlow",
}


def require_tensorflow(feature, module="tensorflow"):
    """Imports and returns `module` for `feature`, or says what to install.

    Args:
        feature: what needs it, as the error message names it (e.g.
            "--augment (a tf.data pipeline)").
        module: "tensorflow", or "tensorflow_datasets" (which needs
            TensorFlow too).

    Returns:
        The module.

    Raises:
        ImportError: where `module` cannot be imported, naming the extra
            that installs it.
    """
    if module not in PACKAGES:
        raise ValueError(f"Expected a module among {sorted(PACKAGES)}. Received: {module!r}.")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{feature} needs {PACKAGES[module]}, which cannot be imported here ({e}). "
            f"Install it with {INSTALL_HINT}.",
            name=module,
        ) from e


def tensorflow_available():
    """Whether TensorFlow imports here (and so TensorBoard logs can be written)."""
    try:
        require_tensorflow("this check")
    except ImportError:
        return False
    return True
