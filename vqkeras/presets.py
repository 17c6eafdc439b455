"""Presets: a model saved as data, loadable in one line, offline.

A preset is a folder with three files, as in keras-hub:

    config.json        the model's serialized config (`keras.saving.serialize_keras_object`)
    model.weights.h5   its weights
    metadata.json      versions, parameter count, build shape, input conventions,
                       the sha256 of the weights, and what the creator measured

`vqkeras.from_preset(name_or_dir)` accepts the name of a preset shipped in
`vqkeras.zoo` or a folder. A preset may leave its weights out and name them by
URL instead (`"weights_url"` in metadata.json): they are fetched once with
`keras.utils.get_file` and cached. Either way the weights must match
`"weights_sha256"` before anything is deserialized, and config.json is
deserialized in Keras safe mode, so loading a preset never runs its code.
"""

import difflib
import hashlib
import json
import os
import shutil
import tempfile

import keras

from vqkeras.file_io import current_umask, write_json_atomic
from vqkeras.version import __version__

CONFIG_FILE = "config.json"
# The preset of a training run (`vqkeras train`, the zoo's recipes) in its folder.
PRESET_DIR = "preset"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PIXEL_RANGE = "uint8 in [0, 255] or float in [0, 1]; reconstructions float32 on [0, 1]"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(model):
    """Metadata that follows from the model itself."""
    description = {
        "class_name": type(model).__name__,
        "vqkeras_version": __version__,
        "keras_version": keras.__version__,
        "saved_with_backend": keras.config.backend(),
        "parameter_count": int(model.count_params()),
        "build_config": model.get_build_config(),
    }
    input_shape = (model.get_build_config() or {}).get("input_shape")
    if hasattr(model, "image_channels") and input_shape:
        description["input_shape"] = list(input_shape[1:])
        description["pixel_range"] = PIXEL_RANGE
    if hasattr(model, "num_embeddings"):
        description["num_embeddings"] = int(model.num_embeddings)
    if hasattr(model, "encoder") and input_shape:
        latent_shape = model.encoder.compute_output_shape(tuple(input_shape))
        description["latent_shape"] = list(latent_shape[1:])
    return description


def _architecture_config(model):
    """The model's serialized config without its compile config: a preset
    holds a model, and how to train it further is the user's choice."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def _without_optimizer(model):
    """The model itself if uncompiled, else an uncompiled copy with its weights:
    a compiled model's weights file also holds the optimizer state (twice the
    weights again for Adam), which a preset does not need."""
    if not model.compiled:
        return model
    copy = type(model).from_config(model.get_config())
    copy.build_from_config(model.get_build_config())
    copy.set_weights(model.get_weights())
    return copy


def save_to_preset(model, directory, metadata=None, overwrite=False):
    """Saves a built model as a preset folder (see the module docstring).

    The folder is written beside its destination and renamed into place, so it
    is either complete or absent.

    Args:
        model: a built vqkeras model.
        directory: the preset folder to create.
        metadata: extra JSON-serializable facts for metadata.json: the data
            and split used, measured metrics, the recipe.
        overwrite: replace an existing folder; without it an existing folder
            raises `FileExistsError`.
    """
    if not model.built:
        raise ValueError(
            f"Cannot save an unbuilt model to a preset: call it on data or build it first. "
            f"Received: {type(model).__name__} with built=False."
        )
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} already exists; pass overwrite=True to replace it.")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.")
    try:
        write_json_atomic(os.path.join(staging, CONFIG_FILE), _architecture_config(model))
        weights = os.path.join(staging, WEIGHTS_FILE)
        _without_optimizer(model).save_weights(weights)
        full_metadata = {
            **_describe(model),
            **(metadata or {}),
            "weights_sha256": sha256_of(weights),
        }
        write_json_atomic(os.path.join(staging, METADATA_FILE), full_metadata)
        # mkdtemp makes the folder private (0700); give it the usual permissions.
        os.chmod(staging, 0o777 & ~current_umask())
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _resolve(name_or_dir):
    """The preset folder for a shipped preset name or a folder path: a preset
    folder, or a training run's folder, whose preset is its `preset/`."""
    name_or_dir = os.fspath(name_or_dir)
    run_preset = os.path.join(name_or_dir, PRESET_DIR)
    if not os.path.exists(os.path.join(name_or_dir, CONFIG_FILE)) and os.path.isfile(
        os.path.join(run_preset, CONFIG_FILE)
    ):
        return run_preset
    if os.path.isdir(name_or_dir):
        return name_or_dir
    from vqkeras import zoo

    names = zoo.list()
    if name_or_dir in names:
        return zoo.preset_dir(name_or_dir)
    close = difflib.get_close_matches(name_or_dir, names, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise ValueError(
        f"Unknown preset {name_or_dir!r}: neither a shipped preset nor a folder.{hint} "
        f"Shipped presets: {', '.join(names) or 'none'}."
    )


def _weights_path(directory, metadata, cache_dir):
    local = os.path.join(directory, WEIGHTS_FILE)
    if os.path.exists(local) or "weights_url" not in metadata:
        return local
    expected = metadata["weights_sha256"]
    if cache_dir is not None:
        # get_file falls back to /tmp when the folder does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    return keras.utils.get_file(
        fname=f"{os.path.basename(os.path.normpath(directory))}-{expected[:16]}.weights.h5",
        origin=metadata["weights_url"],
        file_hash=expected,
        hash_algorithm="sha256",
        cache_subdir="vqkeras",
        cache_dir=cache_dir,
    )


def load_metadata(name_or_dir):
    """The metadata.json of a preset, as a dict."""
    return _read_json(os.path.join(_resolve(name_or_dir), METADATA_FILE))


def from_preset(name_or_dir, expected_class=None, cache_dir=None):
    """Loads a preset: a shipped name (see `vqkeras.zoo.list()`) or a folder.

    Args:
        name_or_dir: preset name or folder.
        expected_class: if given, the preset must hold an instance of it.
        cache_dir: where remote weights are cached (default: Keras's cache,
            `$KERAS_HOME` or `~/.keras`, in its `vqkeras/` subfolder).

    Returns:
        The built model with its weights.

    Raises:
        ValueError: unknown name, missing files, or weights whose sha256
            differs from the one in metadata.json (nothing is loaded then).
        TypeError: the preset holds another class than `expected_class`.
    """
    directory = _resolve(name_or_dir)
    paths = {name: os.path.join(directory, name) for name in (CONFIG_FILE, METADATA_FILE)}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise ValueError(f"Preset {name_or_dir!r} has no {name} (expected at {path}).")
    metadata = _read_json(paths[METADATA_FILE])
    if "weights_sha256" not in metadata:
        raise ValueError(
            f"Preset {name_or_dir!r}: metadata.json has no 'weights_sha256'; "
            "refusing to load unverifiable weights."
        )
    weights = _weights_path(directory, metadata, cache_dir)
    if not os.path.exists(weights):
        raise ValueError(f"Preset {name_or_dir!r} has no weights (expected at {weights}).")
    actual = sha256_of(weights)
    if actual != metadata["weights_sha256"]:
        raise ValueError(
            f"Preset {name_or_dir!r}: the weights file {weights} has sha256 {actual}, "
            f"expected {metadata['weights_sha256']} (metadata.json). It is corrupted, "
            "truncated or was modified; nothing was loaded."
        )
    config = _read_json(paths[CONFIG_FILE])
    # Presets saved with a compile config would come back compiled, with an
    # optimizer that the weights file (rightly) does not fill.
    config.pop("compile_config", None)
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    if expected_class is not None and not isinstance(model, expected_class):
        raise TypeError(
            f"Preset {name_or_dir!r} holds a {type(model).__name__}, "
            f"expected a {expected_class.__name__}."
        )
    if metadata.get("build_config"):
        model.build_from_config(metadata["build_config"])
    model.load_weights(weights)
    return model
