"""`vqkeras export-latents`: the integer code grids of images, and back.

Each image is encoded at its own size (padded by reflection to a multiple of
the model's downsampling factor F: an H x W image has a ceil(H/F) x ceil(W/F)
grid; large images in tiles: `vqkeras.native_size`), unless `--size HxW`
resizes them all. Export writes the code grids of a VQ model (int32;
`indices` `(h, w)` per image for VQVAE, `(h, w, depth)` for RQVAE; `top` and
`bottom` for VQVAE2), each image's size, the labels or file names where known
and the model's name, in one of:

    npz     `model`, `sizes` (N, 2: each image's height and width),
            [`labels`], [`names`], and the codes: when every image has grids
            of one shape, one array per grid, `indices` (N, h, w) (or `top`,
            `bottom`); else (ragged) one array per image and grid,
            `indices_0`, `indices_1`, ... (`top_0`, `bottom_0`, ...) in the
            images' order. Read with `np.load(path)`.
    npy     the code array alone (one grid, images of one grid shape), and
            the rest (`sizes` too) in a .json file beside it
    jsonl   one JSON object per image: `index`, `model`, `size`, [`name`],
            [`label`] and its grid(s) as nested lists: any shapes

plus a PNG beside it (same name, .png) showing the first images next to their
code grids, each code as a color.

`--decode CODES` reads such a file (any of the formats and layouts; e.g. the
codes.npz of `vqkeras sample`, which has no sizes: an image is then as large
as its grid, F pixels per cell), decodes each image from its own grids,
cropped to its size, and writes to a folder: decoded.png (a grid of the first
64), images/ (one PNG per image, named after the codes' names, else
numbered) and images.npz (`images` uint8 `(N, H, W, C)`, or in the ragged
layout `images_0`, ... for images of several sizes, with the `labels` and
`names` of the codes file).

Examples:

    vqkeras export-latents --model vqvae_mnist --input sample:mnist --out runs/codes.npz
    vqkeras export-latents --model vqvae_mnist --decode runs/codes.npz --out runs/decoded
    vqkeras export-latents --model vqvae_cifar10 --input photos/ --out runs/photos.npz
"""

import json
import os

import numpy as np

from vqkeras import native_size
from vqkeras.apps import models
from vqkeras.apps.console import notice
from vqkeras.apps.images import code_picture, image_grid, thumbnails, to_uint8, write_png
from vqkeras.apps.inputs import load_command_images
from vqkeras.apps.outputs import (
    check_outputs,
    describe_input,
    image_file_names,
    make_folder,
    output_paths,
)
from vqkeras.codes import SINGLE_GRID_NAME
from vqkeras.file_io import write_atomic, write_json_atomic

FORMATS = ("npz", "npy", "jsonl")
LEVELS = ("indices", "top", "bottom")
PICTURE_IMAGES = 8
GRID_IMAGES = 64
GRID_COLUMNS = 8
IMAGE_FOLDER = "images"


def _format_of(path, requested, flag="--out"):
    if requested:
        return requested
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"Cannot tell the format of {flag} {path!r} from its suffix: expected .npz, .npy or "
            ".jsonl" + (", or pass --format." if flag == "--out" else " (a file of codes).")
        )
    return suffix


def ragged_arrays(name, arrays):
    """npz entries for one array per image: `{name: stacked}` when all have
    one shape, else the ragged layout `{name_0: ..., name_1: ...}`."""
    if len({array.shape for array in arrays}) == 1:
        return {name: np.stack(arrays)}
    return {f"{name}_{index}": array for index, array in enumerate(arrays)}


def read_ragged_arrays(data, name):
    """The list of per-image arrays that `ragged_arrays` wrote to `data` (an
    open npz) under `name`, or None if it holds neither layout."""
    if name in data.files:
        return list(data[name])
    arrays = []
    while f"{name}_{len(arrays)}" in data.files:
        arrays.append(data[f"{name}_{len(arrays)}"])
    return arrays or None


def _write_codes(path, format, codes, sizes, model_name, labels, names, overwrite):
    levels = list(codes[0])
    if format == "npz":
        arrays = {"model": np.array(model_name), "sizes": np.array(sizes, "int32")}
        for level in levels:
            arrays.update(ragged_arrays(level, [image_codes[level] for image_codes in codes]))
        if labels is not None:
            arrays["labels"] = labels
        if names:
            arrays["names"] = np.array(names)
        write_atomic(path, lambda f: np.savez(f, **arrays), overwrite=overwrite, mode="wb")
    elif format == "npy":
        # export checks that the model has one grid and the images one grid shape
        array = np.stack([image_codes[levels[0]] for image_codes in codes])
        write_atomic(path, lambda f: np.save(f, array), overwrite=overwrite, mode="wb")
        metadata = {
            "model": model_name,
            "shape": list(array.shape),
            "sizes": [list(size) for size in sizes],
            "labels": None if labels is None else labels.tolist(),
            "names": names,
        }
        write_json_atomic(_sidecar(path), metadata, overwrite=overwrite)
    else:

        def write(f):
            for index, image_codes in enumerate(codes):
                record = {"index": index, "model": model_name, "size": list(sizes[index])}
                if names:
                    record["name"] = names[index]
                if labels is not None:
                    record["label"] = int(labels[index])
                record.update({level: grid.tolist() for level, grid in image_codes.items()})
                f.write(json.dumps(record) + "\n")

        write_atomic(path, write, overwrite=overwrite)


def _sidecar(path):
    return os.path.splitext(path)[0] + ".json"


def _codes_picture(images, codes, model):
    """Rows of an image next to its code grids (one tile per RQVAE level),
    as thumbnails of one size for images of several sizes."""
    num_embeddings = {grid.name: grid.num_embeddings for grid in model.code_grids()}
    rows = []
    for image, image_codes in list(zip(images, codes))[:PICTURE_IMAGES]:
        row = [image]
        for level, grid in image_codes.items():
            planes = [grid] if grid.ndim == 2 else [grid[..., d] for d in range(grid.shape[-1])]
            row += [code_picture(plane, num_embeddings[level], image.shape[:2]) for plane in planes]
        rows.append(row)
    tiles = iter(thumbnails([tile for row in rows for tile in row]))
    return image_grid([[next(tiles) for _ in row] for row in rows], len(rows[0]))


def _grid_shapes(shapes):
    """`{level: [N, h, w, ...]}` of per-image `{level: shape}`, with None
    where the images' shapes differ."""
    return {
        level: [len(shapes)]
        + [
            lengths[0] if len(set(lengths)) == 1 else None
            for lengths in zip(*(shape[level] for shape in shapes))
        ]
        for level in shapes[0]
    }


def export(args):
    format = _format_of(args.out, args.format)
    picture_path = os.path.splitext(args.out)[0] + ".png"
    outputs = [args.out, picture_path] + ([_sidecar(args.out)] if format == "npy" else [])
    if len(set(outputs)) < len(outputs):
        raise ValueError(f"--out {args.out!r} would be overwritten by its own picture or metadata.")
    check_outputs(outputs, args.overwrite)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    grids = models.code_grids(model, args.model)
    if format == "npy" and len(grids) != 1:
        raise ValueError(
            f"--format npy holds one array, but {args.model!r} has the code grids "
            f"{sorted(grid.name for grid in grids)}: use npz or jsonl."
        )
    inputs = load_command_images(args, model.image_channels)
    sizes = [image.shape[:2] for image in inputs.images]
    shapes = _grid_shapes([native_size.latent_shapes(model, size) for size in sizes])
    if format == "npy" and None in shapes[grids[0].name]:
        raise ValueError(
            "--format npy holds one array of one shape; these images have code grids of several "
            "shapes (images of several sizes): use npz or jsonl, or --size HxW."
        )
    codes = native_size.encode_indices(
        model, inputs.images, args.batch_size, progress=models.progress_bar("encoding", args.quiet)
    )
    make_folder(args.out)
    _write_codes(
        args.out, format, codes, sizes, args.model, inputs.labels, inputs.names, args.overwrite
    )
    write_png(picture_path, _codes_picture(inputs.images, codes, model), args.overwrite)
    return {
        "model": args.model,
        **describe_input(args.input, args.split),
        "out": args.out,
        "format": format,
        "picture": picture_path,
        "images": len(inputs.images),
        "skipped": len(inputs.skipped),
        "skipped_files": inputs.skipped,
        "codes": shapes,
    }


def _read_jsonl(path):
    records = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path!r} line {number} is not JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path!r} line {number}: expected a JSON object per line.")
            records.append(record)
    if not records:
        raise ValueError(f"{path!r} holds no codes.")
    levels = [level for level in LEVELS if level in records[0]]
    try:
        codes = [{level: np.asarray(record[level]) for level in levels} for record in records]
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path!r}: every line must hold the code grids {levels} ({e}).") from None
    labels = [record.get("label") for record in records]
    names = [record.get("name") for record in records]
    return (
        codes,
        np.asarray(labels, "int64") if None not in labels else None,
        names if None not in names else None,
        [record.get("size") for record in records],
        records[0].get("model"),
    )


def _read_npy(path, data):
    labels = names = sizes = model_name = None
    if os.path.isfile(_sidecar(path)):
        with open(_sidecar(path)) as f:
            metadata = json.load(f)
        labels, names, sizes = metadata.get("labels"), metadata.get("names"), metadata.get("sizes")
        labels = None if labels is None else np.asarray(labels, "int64")
        model_name = metadata.get("model")
    if np.ndim(data) < 3:
        raise ValueError(
            f"{path!r}: codes of shape {np.shape(data)}: expected (N, height, width) or "
            "(N, height, width, depth)."
        )
    return [{SINGLE_GRID_NAME: grid} for grid in data], labels, names, sizes, model_name


def _read_npz(data):
    by_level = {level: read_ragged_arrays(data, level) for level in LEVELS}
    by_level = {level: grids for level, grids in by_level.items() if grids is not None}
    counts = {level: len(grids) for level, grids in by_level.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"holds code grids of different counts: {counts}.")
    count = next(iter(counts.values()), 0)
    codes = [{level: grids[index] for level, grids in by_level.items()} for index in range(count)]
    labels = data["labels"] if "labels" in data.files else None
    names = data["names"].tolist() if "names" in data.files else None
    sizes = data["sizes"].tolist() if "sizes" in data.files else None
    model_name = str(data["model"]) if "model" in data.files else None
    return codes, labels, names, sizes, model_name


def read_codes(path):
    """`(codes, labels, names, sizes, model name)` from a file written by
    export (or by `vqkeras sample`): a list of `{grid name: codes}`, one per
    image, and each image's `(height, width)`; labels, names, sizes (or a
    size) and model name may be None."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Codes file {path!r} does not exist.")
    format = _format_of(path, None, flag="--decode")
    if format == "jsonl":
        codes, labels, names, sizes, model_name = _read_jsonl(path)
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:  # zip or format errors from a damaged file
            raise ValueError(f"Cannot read {path!r} as .{format}: {e}") from None
        if format == "npy":
            codes, labels, names, sizes, model_name = _read_npy(path, data)
        else:
            with data:
                try:
                    codes, labels, names, sizes, model_name = _read_npz(data)
                except ValueError as e:
                    raise ValueError(f"{path!r} {e}") from None
    if not codes or not codes[0]:
        raise ValueError(
            f"{path!r} holds no code grids: expected 'indices', or 'top' and 'bottom' (or their "
            "ragged layout, 'indices_0', ...)."
        )
    for index, image_codes in enumerate(codes):
        for level, grid in image_codes.items():
            if np.ndim(grid) < 2:
                raise ValueError(
                    f"{path!r}: the {level} codes of image {index} have shape {np.shape(grid)}: "
                    "expected (height, width) or (height, width, depth)."
                )
    counts = {"codes": len(codes)}
    counts.update(
        {
            name: len(value)
            for name, value in (("labels", labels), ("names", names), ("sizes", sizes))
            if value is not None
        }
    )
    if len(set(counts.values())) > 1:
        raise ValueError(f"{path!r} holds arrays of different lengths: {counts}.")
    return codes, labels, names, sizes, model_name


def decode(args):
    paths = output_paths(args.out, ("decoded.png", IMAGE_FOLDER, "images.npz"), args.overwrite)
    codes, labels, names, sizes, source_model = read_codes(args.decode)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    if source_model is not None and source_model != args.model:
        notice(f"{args.decode} holds the codes of {source_model!r}; decoding with {args.model!r}.")
    models.check_codes(model, args.model, codes)
    decoded = native_size.decode_indices(
        model, codes, sizes, args.batch_size, progress=models.progress_bar("decoding", args.quiet)
    )
    images = [to_uint8(image) for image in decoded]
    tiles = thumbnails(images[:GRID_IMAGES])
    rows = [tiles[start : start + GRID_COLUMNS] for start in range(0, len(tiles), GRID_COLUMNS)]
    os.makedirs(paths[IMAGE_FOLDER], exist_ok=True)
    for file, image in zip(image_file_names(names, len(images)), images):
        write_png(os.path.join(paths[IMAGE_FOLDER], file), image, args.overwrite)
    write_png(paths["decoded.png"], image_grid(rows, GRID_COLUMNS), args.overwrite)
    arrays = ragged_arrays("images", images)
    if labels is not None:
        arrays["labels"] = labels
    if names:
        arrays["names"] = np.array(names)
    write_atomic(
        paths["images.npz"], lambda f: np.savez(f, **arrays), overwrite=args.overwrite, mode="wb"
    )
    return {
        "model": args.model,
        "codes": args.decode,
        "images": len(images),
        "out": {name: path for name, path in paths.items()},
    }
