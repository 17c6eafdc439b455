"""Running models for the apps: batch loops with progress bars, and the code
grids of VQ models as dicts of NumPy arrays, whatever the family.

The code grids of a model are named by level: `{"indices": ...}` for VQVAE
(`(N, h, w)`) and RQVAE (`(N, h, w, depth)`), `{"top": ..., "bottom": ...}`
for VQVAE2.
"""

import keras
import numpy as np

from vqkeras import evaluation
from vqkeras.apps.console import progress
from vqkeras.apps.inputs import model_image_shape
from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.presets import from_preset
from vqkeras.validation import check_indices

SINGLE_LEVEL = "indices"


def load_model(name_or_dir):
    """The autoencoder of a preset: a shipped name or a folder."""
    model = from_preset(name_or_dir)
    if not isinstance(model, AutoencoderModel):
        raise ValueError(
            f"Preset {name_or_dir!r} holds a {type(model).__name__}: expected an autoencoder "
            "(VQVAE, RQVAE, VQVAE2, Autoencoder, VAE or KLVAE)."
        )
    return model


def batches(count, batch_size, description, quiet):
    starts = range(0, count, batch_size)
    for start in progress(starts, len(starts), description, quiet):
        yield slice(start, start + batch_size)


def reconstruct(model, images, batch_size, quiet=False):
    """float32 reconstructions of `images` on [0, 1], clipped as when saved."""
    outputs = [
        np.asarray(model.predict_on_batch(images[batch]))
        for batch in batches(len(images), batch_size, "reconstructing", quiet)
    ]
    return np.clip(np.concatenate(outputs), 0.0, 1.0)


def require_codes(model, name):
    """Raises a clear error unless `model` has discrete codes."""
    if not hasattr(model, "encode_indices"):
        raise ValueError(
            f"Model {name!r} is a {type(model).__name__}, which has no discrete codes "
            "(no encode_indices): expected a VQ model (VQVAE, RQVAE or VQVAE2)."
        )


def _as_levels(codes):
    codes = codes if isinstance(codes, dict) else {SINGLE_LEVEL: codes}
    return {level: np.asarray(keras.ops.convert_to_numpy(grid)) for level, grid in codes.items()}


def code_shapes(model, name):
    """`{level: code shape per image}` of `model` (a preset named `name`) for
    images of the size it was built for."""
    channels, size = model_image_shape(model)
    if size is None:
        raise ValueError(f"Model {name!r} was saved without an image size.")
    probe = np.zeros((1, *size, channels), "uint8")
    return {
        level: grid.shape[1:] for level, grid in _as_levels(model.encode_indices(probe)).items()
    }


def num_embeddings(model, level):
    """Number of codes K of a level of `model`'s code grids."""
    if level == SINGLE_LEVEL:
        return model.num_embeddings
    return getattr(model, f"{level}_quantizer").num_embeddings


def encode(model, images, batch_size, quiet=False):
    """`{level: int32 code grids}` of `images`."""
    parts = [
        _as_levels(model.encode_indices(images[batch]))
        for batch in batches(len(images), batch_size, "encoding", quiet)
    ]
    return {
        level: np.concatenate([part[level] for part in parts]).astype("int32") for level in parts[0]
    }


def check_codes(model, name, codes):
    """Raises a clear error unless `codes` (`{level: grids}`) can be decoded by
    `model`: the same levels, the grid shapes of the images it was built for
    (an RQVAE also decodes its first k <= depth levels) and codes in [0, K)."""
    expected = code_shapes(model, name)
    if set(codes) != set(expected):
        raise ValueError(
            f"Model {name!r} has the code grids {sorted(expected)}; received {sorted(codes)}."
        )
    for level, shape in expected.items():
        grids = codes[level]
        received = grids.shape[1:]
        fits = len(received) == len(shape) and received[:2] == shape[:2]
        if fits and len(shape) == 3:
            fits = 1 <= received[2] <= shape[2]
        if not fits:
            per_image = "x".join(str(size) for size in shape)
            raise ValueError(
                f"Model {name!r} decodes {level} code grids of shape (N, {', '.join(map(str, shape))})"
                f" ({per_image} per image); received shape {grids.shape}."
            )
        check_indices(grids, num_embeddings(model, level), name=f"{level} codes of {name!r}")


def decode(model, codes, batch_size, quiet=False):
    """float32 images on [0, 1] (clipped) decoded from `{level: code grids}`."""
    count = len(next(iter(codes.values())))
    outputs = []
    for batch in batches(count, batch_size, "decoding", quiet):
        grids = {level: value[batch] for level, value in codes.items()}
        decoded = (
            model.decode_indices(grids[SINGLE_LEVEL])
            if SINGLE_LEVEL in grids
            else model.decode_indices(**grids)
        )
        outputs.append(np.asarray(keras.ops.convert_to_numpy(decoded)))
    return np.clip(np.concatenate(outputs), 0.0, 1.0)


def codebook_statistics(codes, model):
    """`vqkeras.evaluation.codebook_statistics` of `{level: code grids}`."""
    return evaluation.codebook_statistics(model, codes.get(SINGLE_LEVEL, codes))
