"""Autoencoders on images of any size, each image at its own size.

Every autoencoder family of vqkeras is fully convolutional: a model trained on
32x32 images encodes, quantizes and decodes a 300x451 photo as well, into a
75x113 code grid (`vqvae_cifar10`, downsampling factor 4). The functions here
take a list of images of any sizes and give each one's outputs at its own
size:

- `reconstruct(model, images)`: float32 reconstructions on [0, 1];
- `encode_indices(model, images)`: each image's code grids, as
  `{grid name: int32 codes}` (`"indices"` `(h, w)`, or `(h, w, depth)` for an
  RQ-VAE; `"top"` and `"bottom"` for a VQ-VAE-2);
- `decode_indices(model, codes, sizes)`: images back from such codes;
- `latent_shapes(model, size)`: the shapes of those grids (or of the
  continuous latents) for an image of `size`, without running the model.

For one image, pass a list of one: `reconstruct(model, [image])[0]`.

How an image goes through the model:

1. **Padding.** Its height and width are padded up to multiples of the
   model's downsampling factor F (`model.downsampling_factor`; 4 for
   `vqvae_cifar10`, 8 for `vqvae2_cifar10`) by reflection at the bottom and
   right edges (`pad_image`; an image smaller than F is reflected back and
   forth, a 1x1 image repeated), and its outputs are cropped back: an image
   of H x W pixels has code grids of ceil(H / F) x ceil(W / F) cells
   (times F / f for a finer grid of factor f).
2. **Batching.** Images of one padded size go through the model together, up
   to `batch_size` of them, and no more than a window's pixels (below) per
   forward pass.
3. **Tiling.** Along an axis longer than `tile_size + 2 * margin` pixels, the
   image is cut into n = ceil(length / tile_size) cores of equal length
   (multiples of F). Each core is run in a window that adds `margin` pixels
   of the image on both sides; the windows at the image's edges are shifted
   inwards, so all windows have one shape (one compiled function, batched).
   Only each window's core is kept. Every kept output was computed with at
   least `margin` pixels of real image around it, except at the image's own
   edges, where its window ends where the image ends, as without tiling. So
   when an output depends on no pixel further than `margin` away (the model's
   receptive field), tiling leaves every output as it was: no seams, and
   tiled results equal untiled ones up to float rounding (the tests allow
   1e-4 on [0, 1] images). The default margin is `MARGIN_CELLS` cells of the
   coarsest grid, 16 F pixels: 64 for `vqvae_cifar10`, whose reconstructions
   depend on pixels at most 23 away (8 through its encoder, 15 through its
   decoder, measured), and 128 for `vqvae2_cifar10`. Code grids and decoding
   are tiled the same way, each grid cut at its own scale (window edges are
   multiples of F). A forward pass holds at most (tile_size + 2 margin)^2
   pixels, 1152^2 by default for F = 4: that bounds the memory, whatever the
   image size.

Layers that see the whole image (the GroupNorm statistics and self-attention
of the LDM architecture) have no bounded receptive field: tiled results of
such a model differ from untiled ones where tiles meet. Raise `tile_size`
above the image size to run it untiled, memory allowing.
"""

import keras
import numpy as np

from vqkeras import validation
from vqkeras.codes import codes_by_name, codes_from_names

TILE_SIZE = 1024
"""Pixels of a tile's core along each axis, by default."""
MARGIN_CELLS = 16
"""The default margin, in cells of the model's coarsest grid."""


def padded_size(size, factor):
    """`size` `(height, width)` rounded up to multiples of `factor`."""
    return tuple(-(-int(length) // factor) * factor for length in size)


def pad_image(image, factor):
    """`image` `(H, W, C)` padded at the bottom and right, by reflection, to
    multiples of `factor`."""
    height, width = padded_size(image.shape[:2], factor)
    if (height, width) == image.shape[:2]:
        return image
    padding = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
    return np.pad(image, padding, mode="reflect")


def latent_shapes(model, size):
    """The latents of an image of `size` `(height, width)` through `model`:
    `{grid name: shape}` of its code grids for a discrete model, else
    `{"latents": (h, w, latent_dim)}`."""
    height, width = padded_size(size, model.downsampling_factor)
    grids = model.code_grids((height, width, model.image_channels))
    if grids:
        return {grid.name: tuple(grid.shape) for grid in grids}
    factor = model.downsampling_factor
    return {"latents": (height // factor, width // factor, model.latent_dim)}


def reconstruct(model, images, batch_size=256, tile_size=TILE_SIZE, margin=None, progress=None):
    """Reconstructions of `images`, each at its own size.

    Args:
        model: a vqkeras autoencoder.
        images: a sequence of `(H, W, C)` images (a list, or one array
            `(N, H, W, C)`), uint8 in [0, 255] or float in [0, 1], of any
            sizes.
        batch_size: images (or tiles) per forward pass, at most.
        tile_size: pixels of a tile's core (see the module docstring).
        margin: pixels of context around a tile (default: `MARGIN_CELLS`
            cells of the coarsest grid).
        progress: wraps the iterable of forward passes, as
            `progress(iterable, total)` (e.g. a tqdm bar).

    Returns:
        A list of float32 `(H, W, C)` images on [0, 1] (clipped), in order.
    """

    def run(batch):
        return {"image": np.asarray(model.predict_on_batch(batch["image"]))}

    padded = [{"image": pad_image(image, model.downsampling_factor)} for image in _check(images)]
    sizes = [arrays["image"].shape[:2] for arrays in padded]
    outputs = _run(model, run, padded, sizes, batch_size, tile_size, margin, progress)
    return [
        np.clip(output["image"][: image.shape[0], : image.shape[1]], 0.0, 1.0)
        for image, output in zip(images, outputs)
    ]


def encode_indices(model, images, batch_size=256, tile_size=TILE_SIZE, margin=None, progress=None):
    """The code grids of `images`, each at its own size: a list of
    `{grid name: int32 codes}`, one per image (arguments as `reconstruct`'s;
    `model` discrete)."""
    grids = _require_codes(model)

    def run(batch):
        codes = codes_by_name(grids, model.encode_indices(batch["image"]))
        return {
            name: keras.ops.convert_to_numpy(value).astype("int32") for name, value in codes.items()
        }

    padded = [{"image": pad_image(image, model.downsampling_factor)} for image in _check(images)]
    sizes = [arrays["image"].shape[:2] for arrays in padded]
    return _run(model, run, padded, sizes, batch_size, tile_size, margin, progress)


def decode_indices(
    model, codes, sizes=None, batch_size=256, tile_size=TILE_SIZE, margin=None, progress=None
):
    """Images decoded from code grids of any shapes.

    Args:
        model: the discrete model whose codes they are.
        codes: a list of `{grid name: int codes}`, one per image, as
            `encode_indices` gives them.
        sizes: each image's `(height, width)`, to crop it to; None (or a
            None in the list) keeps the whole grid, F pixels per cell of the
            coarsest grid.
        batch_size, tile_size, margin, progress: as for `reconstruct`.

    Returns:
        A list of float32 `(H, W, C)` images on [0, 1] (clipped), in order.
    """
    grids = _require_codes(model)
    factors = _grid_factors(model)
    sizes = [None] * len(codes) if sizes is None else list(sizes)
    if len(sizes) != len(codes):
        raise ValueError(f"Expected one size per image: {len(codes)} images, {len(sizes)} sizes.")
    covered, crops = [], []
    for index, (image_codes, size) in enumerate(zip(codes, sizes)):
        full = _size_of_codes(image_codes, factors, index)
        covered.append(full)
        if size is not None and padded_size(size, model.downsampling_factor) != full:
            raise ValueError(
                f"Image {index}: its code grids cover {full[0]}x{full[1]} pixels, which is not "
                f"the padded size of {size[0]}x{size[1]} (height x width). Expected a size that "
                f"pads to {full[0]}x{full[1]}."
            )
        crops.append(full if size is None else tuple(size))

    def run(batch):
        images = model.decode_indices(codes_from_names(grids, batch))
        return {"image": keras.ops.convert_to_numpy(images)}

    outputs = _run(model, run, codes, covered, batch_size, tile_size, margin, progress)
    return [
        np.clip(output["image"][:height, :width], 0.0, 1.0)
        for (height, width), output in zip(crops, outputs)
    ]


def _check(images):
    for index, image in enumerate(images):
        if np.ndim(image) != 3:
            raise ValueError(
                f"Expected a sequence of images (height, width, channels); image {index} has "
                f"shape {np.shape(image)}. One image? Pass a list of one: [image]."
            )
    return images


def _require_codes(model):
    grids = model.code_grids()
    if not grids:
        raise ValueError(
            f"{type(model).__name__} '{model.name}' has continuous latents: expected a discrete "
            "model (with encode_indices and decode_indices)."
        )
    return grids


def _grid_factors(model):
    """`{grid name: pixels per cell}`."""
    height = model.built_image_shape()[0]
    return {grid.name: height // grid.shape[0] for grid in model.code_grids()}


def _size_of_codes(image_codes, factors, index):
    """The padded image size that `image_codes` cover, the same for each grid."""
    if set(image_codes) != set(factors):
        raise ValueError(
            f"Image {index}: expected the code grids {sorted(factors)}. "
            f"Received: {sorted(image_codes)}."
        )
    covered = {
        name: tuple(int(length) * factors[name] for length in np.shape(grid)[:2])
        for name, grid in image_codes.items()
    }
    if len(set(covered.values())) != 1 or any(np.ndim(grid) < 2 for grid in image_codes.values()):
        shapes = {name: np.shape(grid) for name, grid in image_codes.items()}
        raise ValueError(
            f"Image {index}: code grids of shapes {shapes} do not cover one image "
            f"(pixels per cell: {factors})."
        )
    return next(iter(covered.values()))


def _windows(length, tile_size, margin, factor):
    """`(start, stop, core_start, core_stop)` of the windows along an axis of
    `length` pixels (a multiple of `factor`), as the module docstring says."""
    if length <= tile_size + 2 * margin:
        return [(0, length, 0, length)]
    count = -(-length // tile_size)
    core = -(-length // (count * factor)) * factor
    size = core + 2 * margin
    windows = []
    for core_start in range(0, length, core):
        start = min(max(core_start - margin, 0), length - size)
        windows.append((start, start + size, core_start, min(core_start + core, length)))
    return windows


def _run(model, run, inputs, sizes, batch_size, tile_size, margin, progress):
    """`run` (a batch `{name: array}` -> `{name: array}`) over `inputs`, a list
    of `{name: (h, w, ...) array}`: each image's arrays, each at its own scale
    of the image's padded size in `sizes`. Grouped by shape and tiled; a list
    of each image's outputs at their whole size."""
    factor = model.downsampling_factor
    batch_size = validation.positive_int("batch_size", batch_size)
    tile_size = -(-validation.positive_int("tile_size", tile_size) // factor) * factor
    if margin is None:
        margin = MARGIN_CELLS * factor
    margin = -(-validation.non_negative_int("margin", margin) // factor) * factor
    groups = {}
    for index, arrays in enumerate(inputs):
        key = tuple((name, np.shape(array)) for name, array in sorted(arrays.items()))
        groups.setdefault(key, []).append(index)
    passes = []
    for indices in groups.values():
        size = tuple(sizes[indices[0]])
        windows = [
            (rows, columns)
            for rows in _windows(size[0], tile_size, margin, factor)
            for columns in _windows(size[1], tile_size, margin, factor)
        ]
        (top, bottom, _, _), (left, right, _, _) = windows[0]
        per_pass = max(
            1, min(batch_size, (tile_size + 2 * margin) ** 2 // ((bottom - top) * (right - left)))
        )
        jobs = [(index, window) for index in indices for window in windows]
        passes += [
            (size, jobs[start : start + per_pass]) for start in range(0, len(jobs), per_pass)
        ]
    outputs = [{} for _ in inputs]
    steps = passes if progress is None else progress(passes, len(passes))
    for size, jobs in steps:
        batch = {
            name: np.stack([_crop(inputs[index][name], window, size) for index, window in jobs])
            for name in inputs[jobs[0][0]]
        }
        results = run(batch)
        for position, (index, (rows, columns)) in enumerate(jobs):
            for name, result in results.items():
                _paste(outputs[index], name, result[position], rows, columns, size)
    return outputs


def _crop(array, window, size):
    """The part of `array` (an image's array at its own scale, covering
    `size` pixels) in the window `((top, bottom, ...), (left, right, ...))`."""
    (top, bottom, _, _), (left, right, _, _) = window
    scale = size[0] // array.shape[0]
    return array[top // scale : bottom // scale, left // scale : right // scale]


def _paste(output, name, result, rows, columns, size):
    """Writes the core of one window's `result` into `output[name]`, the
    whole image's array (made on first use)."""
    top, bottom, core_top, core_bottom = rows
    left, right, core_left, core_right = columns
    scale = (bottom - top) // result.shape[0]
    if name not in output:
        shape = (size[0] // scale, size[1] // scale, *result.shape[2:])
        output[name] = np.empty(shape, result.dtype)
    output[name][
        core_top // scale : core_bottom // scale, core_left // scale : core_right // scale
    ] = result[
        (core_top - top) // scale : (core_bottom - top) // scale,
        (core_left - left) // scale : (core_right - left) // scale,
    ]
