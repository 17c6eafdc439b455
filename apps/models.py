"""Running models for the apps: batch loops with progress bars, images at
their own sizes (through `vqkeras.native_size`) with their metrics, and the
code grids of VQ models as dicts of NumPy arrays, whatever the family.

The code grids of a model are named as its `code_grids()` name them:
`{"indices": ...}` for one grid (VQVAE `(N, h, w)`, RQVAE `(N, h, w, depth)`),
`{"top": ..., "bottom": ...}` for VQVAE2. The codes of images of their own
sizes are a list with one such dict per image, without the batch axis.
"""

import keras
import numpy as np

from vqkeras import evaluation, native_size
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


def progress_bar(description, quiet):
    """A `progress` argument for `vqkeras.native_size`: a bar on stderr."""
    return lambda iterable, total: progress(iterable, total, description, quiet)


def reconstruction_report(model, inputs, batch_size, quiet=False):
    """Each image of `inputs` (an `ImageSet`) reconstructed at its own size,
    with its metrics, and their means.

    Returns:
        `(reconstructions, per_image, means)`: float32 images on [0, 1]; a
        dict per image (`index`, `name` and `label` where known, `size`,
        `mse`, `psnr_db`, `ssim` (None below SSIM's 11x11 window) and
        `latent_shapes`: `{grid name: shape}` of a VQ model's codes, or
        `{"latents": shape}`); and `images`, `mse`, `psnr_db`,
        `psnr_std_db`, `ssim` (the mean over the images that have one) and,
        for VQ models, `codebook_statistics`.
    """
    images = inputs.images
    reconstructions = native_size.reconstruct(
        model, images, batch_size, progress=progress_bar("reconstructing", quiet)
    )
    metrics = evaluation.per_image_metrics(images, reconstructions)
    ssim = metrics["ssim"][np.isfinite(metrics["ssim"])]
    means = {
        "images": len(images),
        "mse": float(np.mean(metrics["mse"])),
        "psnr_db": float(np.mean(metrics["psnr_db"])),
        "psnr_std_db": float(np.std(metrics["psnr_db"])),
        "ssim": float(np.mean(ssim)) if len(ssim) else None,
    }
    if model.code_grids():
        codes = native_size.encode_indices(
            model, images, batch_size, progress=progress_bar("encoding", quiet)
        )
        means.update(codebook_statistics(codes, model))
    per_image, shapes = [], {}  # latent shapes by image size
    for index, image in enumerate(images):
        entry = {"index": index}
        if inputs.names:
            entry["name"] = inputs.names[index]
        if inputs.labels is not None:
            entry["label"] = int(inputs.labels[index])
        entry["size"] = list(image.shape[:2])
        entry.update({key: float(values[index]) for key, values in metrics.items()})
        entry["ssim"] = entry["ssim"] if np.isfinite(entry["ssim"]) else None
        if image.shape[:2] not in shapes:
            shapes[image.shape[:2]] = native_size.latent_shapes(model, image.shape[:2])
        entry["latent_shapes"] = {n: list(shape) for n, shape in shapes[image.shape[:2]].items()}
        per_image.append(entry)
    return reconstructions, per_image, means


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
    """Raises a clear error unless `codes` (a list of `{grid name: codes}`,
    one per image) can be decoded by `model`: its grids, each of the rank
    its codes have (stacked codes may hold their first k <= depth levels
    only), codes in [0, K). Their spatial shapes are free: each image is
    decoded at its own size."""
    grids = code_grids(model, name)
    expected = [grid.name for grid in grids]
    for index, image_codes in enumerate(codes):
        if set(image_codes) != set(expected):
            raise ValueError(
                f"Model {name!r} has the code grids {sorted(expected)}; image {index} has "
                f"{sorted(image_codes)}."
            )
        for grid in grids:
            received = np.shape(image_codes[grid.name])
            fits = len(received) == len(grid.shape) and min(received[:2], default=0) >= 1
            if fits and grid.depth is not None:
                fits = 1 <= received[2] <= grid.depth
            if not fits:
                depth = "" if grid.depth is None else f", 1 to {grid.depth} levels"
                raise ValueError(
                    f"Model {name!r} decodes {grid.name} code grids of shape "
                    f"({', '.join(['height', 'width', 'depth'][: len(grid.shape)])}{depth}) "
                    f"per image; image {index} has shape {received}."
                )
    for grid in grids:
        check_indices(
            np.concatenate([np.ravel(image_codes[grid.name]) for image_codes in codes]),
            grid.num_embeddings,
            name=f"{grid.name} codes of {name!r}",
        )


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
    """`vqkeras.evaluation.codebook_statistics` of the codes of images, a list
    of `{grid name: codes}`. For images of several sizes, usage and
    perplexity are over all their codes, `bits_per_image` is the mean, and
    `latent_grid` is left out (each image's is in its own metrics)."""
    grids = model.code_grids()
    if all(len({np.shape(c[grid.name]) for c in codes}) == 1 for grid in grids):
        # One shape per grid: stacked, as a batch is.
        stacked = {grid.name: np.stack([c[grid.name] for c in codes]) for grid in grids}
        return evaluation.codebook_statistics(model, codes_from_names(grids, stacked))
    # All positions of all images side by side, as one image of one row.
    flat = {
        grid.name: np.concatenate(
            [np.reshape(c[grid.name], (1, -1, *np.shape(c[grid.name])[2:])) for c in codes], axis=1
        )
        for grid in grids
    }
    statistics = evaluation.codebook_statistics(model, codes_from_names(grids, flat))
    return {
        key: value / len(codes) if "bits_per_image" in key else value
        for key, value in statistics.items()
        if "latent_grid" not in key
    }
