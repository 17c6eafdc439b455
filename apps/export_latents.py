"""`vqkeras export-latents`: the integer code grids of images, and back.

Export writes the code grids of a VQ model (int32; `indices` `(N, h, w)` for
VQVAE, `(N, h, w, depth)` for RQVAE; `top` and `bottom` for VQVAE2) with the
labels or file names where known and the model's name, in one of:

    npz     arrays `indices` (or `top`, `bottom`), `model`, [`labels`],
            [`names`]; read with `np.load(path)`
    npy     the code array alone, and the rest in a .json file beside it
            (not for VQVAE2, whose two grids need npz or jsonl)
    jsonl   one JSON object per image: `index`, `model`, [`name`], [`label`]
            and its grid(s) as nested lists

plus a PNG beside it (same name, .png) showing the first images next to their
code grids, each code as a color.

`--decode CODES` reads such a file (any of the formats; e.g. the codes.npz of
`vqkeras sample`) and writes the decoded images to a folder: decoded.png (a
grid of the first 64) and images.npz (`images` uint8 `(N, H, W, C)`, with the
`labels` and `names` of the codes file).

Examples:

    vqkeras export-latents --model vqvae_mnist --input sample:mnist --out runs/codes.npz
    vqkeras export-latents --model vqvae_mnist --decode runs/codes.npz --out runs/decoded
"""

import json
import os

import numpy as np

from vqkeras.apps import models
from vqkeras.apps.console import notice
from vqkeras.apps.images import code_picture, image_grid, to_uint8, write_png
from vqkeras.apps.inputs import load_images, model_image_shape
from vqkeras.apps.outputs import check_outputs, describe_input, make_folder, output_paths
from vqkeras.codes import SINGLE_GRID_NAME
from vqkeras.file_io import write_atomic, write_json_atomic

FORMATS = ("npz", "npy", "jsonl")
LEVELS = ("indices", "top", "bottom")
PICTURE_IMAGES = 8
GRID_IMAGES = 64
GRID_COLUMNS = 8


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


def _write_codes(path, format, codes, model_name, labels, names, overwrite):
    count = len(next(iter(codes.values())))
    if format == "npz":
        arrays = {**codes, "model": np.array(model_name)}
        if labels is not None:
            arrays["labels"] = labels
        if names:
            arrays["names"] = np.array(names)
        write_atomic(path, lambda f: np.savez(f, **arrays), overwrite=overwrite, mode="wb")
    elif format == "npy":
        (array,) = codes.values()  # export checks that the model has one grid
        write_atomic(path, lambda f: np.save(f, array), overwrite=overwrite, mode="wb")
        metadata = {
            "model": model_name,
            "shape": list(array.shape),
            "labels": None if labels is None else labels.tolist(),
            "names": names,
        }
        write_json_atomic(_sidecar(path), metadata, overwrite=overwrite)
    else:

        def write(f):
            for index in range(count):
                record = {"index": index, "model": model_name}
                if names:
                    record["name"] = names[index]
                if labels is not None:
                    record["label"] = int(labels[index])
                record.update({level: grids[index].tolist() for level, grids in codes.items()})
                f.write(json.dumps(record) + "\n")

        write_atomic(path, write, overwrite=overwrite)


def _sidecar(path):
    return os.path.splitext(path)[0] + ".json"


def _codes_picture(images, codes, model):
    """Rows of an image next to its code grids (one tile per RQVAE level)."""
    size = images.shape[1:3]
    num_embeddings = {grid.name: grid.num_embeddings for grid in model.code_grids()}
    rows = []
    for index in range(min(PICTURE_IMAGES, len(images))):
        row = [images[index]]
        for level, grids in codes.items():
            grid = grids[index]
            planes = [grid] if grid.ndim == 2 else [grid[..., d] for d in range(grid.shape[-1])]
            row += [code_picture(plane, num_embeddings[level], size) for plane in planes]
        rows.append(row)
    return image_grid(rows, len(rows[0]))


def export(args):
    format = _format_of(args.out, args.format)
    picture_path = os.path.splitext(args.out)[0] + ".png"
    outputs = [args.out, picture_path] + ([_sidecar(args.out)] if format == "npy" else [])
    if len(set(outputs)) < len(outputs):
        raise ValueError(f"--out {args.out!r} would be overwritten by its own picture or metadata.")
    check_outputs(outputs, args.overwrite)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    channels, size = model_image_shape(model)
    grids = models.code_grids(model, args.model)
    if format == "npy" and len(grids) != 1:
        raise ValueError(
            f"--format npy holds one array, but {args.model!r} has the code grids "
            f"{sorted(grid.name for grid in grids)}: use npz or jsonl."
        )
    inputs = load_images(
        args.input, args.split, channels, size, args.strict, args.limit, args.quiet
    )
    codes = models.encode(model, inputs.images, args.batch_size, args.quiet)
    make_folder(args.out)
    _write_codes(args.out, format, codes, args.model, inputs.labels, inputs.names, args.overwrite)
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
        "codes": {level: list(grids.shape) for level, grids in codes.items()},
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
        codes = {level: np.asarray([record[level] for record in records]) for level in levels}
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"{path!r}: every line must hold code grids {levels} of one shape ({e})."
        ) from None
    labels = [record.get("label") for record in records]
    names = [record.get("name") for record in records]
    return (
        codes,
        np.asarray(labels, "int64") if None not in labels else None,
        names if None not in names else None,
        records[0].get("model"),
    )


def read_codes(path):
    """`(codes, labels, names, model name)` from a file written by export (or
    by `vqkeras sample`); labels, names and model name may be None."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Codes file {path!r} does not exist.")
    format = _format_of(path, None, flag="--decode")
    if format == "jsonl":
        codes, labels, names, model_name = _read_jsonl(path)
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:  # zip or format errors from a damaged file
            raise ValueError(f"Cannot read {path!r} as .{format}: {e}") from None
        if format == "npy":
            codes, labels, names, model_name = {SINGLE_GRID_NAME: data}, None, None, None
            if os.path.isfile(_sidecar(path)):
                with open(_sidecar(path)) as f:
                    metadata = json.load(f)
                labels, names = metadata.get("labels"), metadata.get("names")
                labels = None if labels is None else np.asarray(labels, "int64")
                model_name = metadata.get("model")
        else:
            with data:
                codes = {level: data[level] for level in LEVELS if level in data.files}
                labels = data["labels"] if "labels" in data.files else None
                names = data["names"].tolist() if "names" in data.files else None
                model_name = str(data["model"]) if "model" in data.files else None
    if not codes:
        raise ValueError(
            f"{path!r} holds no code grids: expected 'indices', or 'top' and 'bottom'."
        )
    for level, grids in codes.items():
        if np.ndim(grids) < 3:
            raise ValueError(
                f"{path!r}: {level} codes of shape {np.shape(grids)}: expected "
                "(N, height, width) or (N, height, width, depth)."
            )
    counts = {name: len(value) for name, value in codes.items()}
    counts.update(
        {
            name: len(value)
            for name, value in (("labels", labels), ("names", names))
            if value is not None
        }
    )
    if len(set(counts.values())) > 1:
        raise ValueError(f"{path!r} holds arrays of different lengths: {counts}.")
    return codes, labels, names, model_name


def decode(args):
    paths = output_paths(args.out, ("decoded.png", "images.npz"), args.overwrite)
    codes, labels, names, source_model = read_codes(args.decode)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    if source_model is not None and source_model != args.model:
        notice(f"{args.decode} holds the codes of {source_model!r}; decoding with {args.model!r}.")
    models.check_codes(model, args.model, codes)
    images = to_uint8(models.decode(model, codes, args.batch_size, args.quiet))
    rows = [
        list(images[start : start + GRID_COLUMNS])
        for start in range(0, min(GRID_IMAGES, len(images)), GRID_COLUMNS)
    ]
    make_folder(paths["decoded.png"])
    write_png(paths["decoded.png"], image_grid(rows, GRID_COLUMNS), args.overwrite)
    arrays = {"images": images}
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
