"""Running models for the apps: batch loops with progress bars, and the code
grids of VQ models as dicts of NumPy arrays, whatever the family.

The code grids of a model are named as its `code_grids()` name them:
`{"indices": ...}` for one grid (VQVAE `(N, h, w)`, RQVAE `(N, h, w, depth)`),
`{"top": ..., "bottom": ...}` for VQVAE2.
"""

import keras
import numpy as np

from vqkeras import evaluation
from vqkeras.apps.console import progress
from vqkeras.apps.inputs import model_image_shape
from vqkeras.codes import codes_by_name, codes_from_names
from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.presets import from_preset
from vqkeras.validation import check_indices


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
    if not model.code_grids():
        raise ValueError(
            f"Model {name!r} is a {type(model).__name__}, which has no discrete codes "
            "(no encode_indices): expected a VQ model (VQVAE, RQVAE or VQVAE2)."
        )


def code_grids(model, name):
    """`model.code_grids()` (a preset named `name`) for the images it was built for."""
    channels, size = model_image_shape(model)
    if size is None:
        raise ValueError(f"Model {name!r} was saved without an image size.")
    return model.code_grids((*size, channels))


def _to_numpy(codes):
    return {name: np.asarray(keras.ops.convert_to_numpy(grid)) for name, grid in codes.items()}


def encode(model, images, batch_size, quiet=False):
    """`{grid name: int32 codes}` of `images`."""
    grids = model.code_grids()
    parts = [
        _to_numpy(codes_by_name(grids, model.encode_indices(images[batch])))
        for batch in batches(len(images), batch_size, "encoding", quiet)
    ]
    return {
        name: np.concatenate([part[name] for part in parts]).astype("int32") for name in parts[0]
    }


def check_codes(model, name, codes):
    """Raises a clear error unless `codes` (`{grid name: codes}`) can be
    decoded by `model`: the same grids, of the shapes of the images it was
    built for (stacked codes may hold their first k <= depth levels only) and
    codes in [0, K)."""
    grids = code_grids(model, name)
    expected = [grid.name for grid in grids]
    if set(codes) != set(expected):
        raise ValueError(
            f"Model {name!r} has the code grids {sorted(expected)}; received {sorted(codes)}."
        )
    for grid in grids:
        received = codes[grid.name].shape[1:]
        fits = len(received) == len(grid.shape) and received[:2] == grid.spatial_shape
        if fits and grid.depth is not None:
            fits = 1 <= received[2] <= grid.depth
        if not fits:
            per_image = "x".join(str(size) for size in grid.shape)
            raise ValueError(
                f"Model {name!r} decodes {grid.name} code grids of shape "
                f"(N, {', '.join(map(str, grid.shape))}) ({per_image} per image); received "
                f"shape {codes[grid.name].shape}."
            )
        check_indices(codes[grid.name], grid.num_embeddings, name=f"{grid.name} codes of {name!r}")


def decode(model, codes, batch_size, quiet=False):
    """float32 images on [0, 1] (clipped) decoded from `{grid name: codes}`."""
    grids = model.code_grids()
    count = len(next(iter(codes.values())))
    outputs = []
    for batch in batches(count, batch_size, "decoding", quiet):
        part = codes_from_names(grids, {name: value[batch] for name, value in codes.items()})
        outputs.append(np.asarray(keras.ops.convert_to_numpy(model.decode_indices(part))))
    return np.clip(np.concatenate(outputs), 0.0, 1.0)


def codebook_statistics(codes, model):
    """`vqkeras.evaluation.codebook_statistics` of `{grid name: codes}`."""
    return evaluation.codebook_statistics(model, codes_from_names(model.code_grids(), codes))
