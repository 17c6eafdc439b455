"""Reading images for the apps: shipped samples, .npz files, image files and
folders, and tensorflow-datasets datasets, made to fit the model: converted
to its channels, and each kept at its own size or resized to one."""

import dataclasses
import os

import numpy as np
from PIL import Image

from vqkeras import samples
from vqkeras.apps.console import notice, progress, warn
from vqkeras.dependencies import require_tensorflow

SAMPLE_PREFIX = "sample:"
TFDS_PREFIX = "tfds:"
INPUT_HELP = (
    "sample:mnist, sample:cifar10, an .npz (keras.datasets layout, or 'images' and optional "
    "'labels'), tfds:NAME[:SPLIT] (tensorflow-datasets; downloads the dataset if it is not "
    "prepared yet), or PNG/JPEG files and folders of them (several allowed)"
)
# Pillow modes whose images have a single (gray) channel.
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclasses.dataclass
class ImageSet:
    """Images read for a model.

    Attributes:
        images: uint8 array `(N, H, W, C)`, or a list of uint8 `(H, W, C)`
            arrays of their own sizes (`load_images(..., own_size=True)`).
        labels: int64 array `(N,)`, or None when the input has no labels.
        names: the file of each image (as given, or folder/file), or None
            when the images did not come from image files.
        skipped: `{"path", "reason"}` of each file that could not be read.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    names: list | None = None
    skipped: list = dataclasses.field(default_factory=list)


def model_image_shape(model):
    """`(channels, (height, width))` of the images `model` was built for; the
    size is None for a model built without one."""
    input_shape = (model.get_build_config() or {}).get("input_shape")
    size = tuple(input_shape[1:3]) if input_shape and None not in input_shape[1:3] else None
    return model.image_channels, size


def load_images(
    specs,
    split="test",
    channels=None,
    size=None,
    strict=False,
    limit=None,
    quiet=False,
    own_size=False,
):
    """The images named by `specs`, converted to `channels` and `size`.

    Args:
        specs: an input spec or a list of them (see `INPUT_HELP`). Image
            files and folders may be combined; `sample:`, `tfds:` and .npz
            inputs stand alone.
        split: split of keras.datasets-layout .npz files and of `tfds:NAME`
            without a split.
        channels: 1 or 3: grayscale images are repeated to RGB and RGB ones
            reduced to their luma (ITU-R 601, as Pillow does), with a notice;
            None keeps the channels (files: RGB unless all are grayscale).
        size: `(height, width)`: images of another size are resized
            (bilinear), with a notice; None resizes them to the size of the
            first image, or with `own_size` keeps each at its own.
        strict: raise `ValueError` rather than convert channels or resize.
        limit: read at most this many images (the first ones).
        quiet: no progress bar.
        own_size: without `size`, keep each image at its own size and give
            `images` as a list of `(H, W, C)` arrays.

    Returns:
        An `ImageSet`. Files that are not readable images (damaged,
        truncated, of another format) are skipped with a warning and listed
        in `skipped`.
    """
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise ValueError("No input given: expected at least one input.")
    specs = [os.fspath(spec) for spec in specs]
    standalone = [spec for spec in specs if _is_collection(spec)]
    if standalone and len(specs) > 1:
        raise ValueError(
            f"Input {standalone[0]!r} cannot be combined with other inputs: only image files "
            f"and folders can. Received {len(specs)} inputs."
        )
    if standalone:
        images, labels = _load_collection(specs[0], split, limit, quiet)
        images = _conform(images, channels, size, strict, specs[0], own_size=own_size)
        return ImageSet(images, labels)
    return _load_files(specs, channels, size, strict, limit, quiet, own_size)


def load_command_images(args, channels):
    """The images of a command's `--input` for a model that takes any size:
    each at its own size (a list), or all resized to `--size` (an array).
    `args` holds `input`, `split`, `size`, `strict`, `limit` and `quiet`."""
    return load_images(
        args.input,
        args.split,
        channels,
        args.size,
        args.strict,
        args.limit,
        args.quiet,
        own_size=True,
    )


def load_images_of_size(args, channels, size, what):
    """The images of a command's `--input` for `what`, which takes images of
    `size` `(height, width)` only (a prior over a fixed code grid, a
    classifier): resized to it when `--size` asks for it, else refused if of
    another size, with a one-line hint. `args` as for
    `load_command_images`."""
    expected = f"{size[0]}x{size[1]}"
    if args.size is not None and tuple(args.size) != tuple(size):
        raise ValueError(
            f"{what} takes {expected} images only (height x width). "
            f"Received --size {args.size[0]}x{args.size[1]}."
        )
    inputs = load_command_images(args, channels)
    for index, image in enumerate(inputs.images):
        if image.shape[:2] != tuple(size):
            where = repr(inputs.names[index]) if inputs.names else f"image {index} of the input"
            raise ValueError(
                f"{what} takes {expected} images only (height x width); {where} is "
                f"{image.shape[0]}x{image.shape[1]}. Pass --size {expected} to resize the "
                "images (bilinear)."
            )
    inputs.images = np.asarray(inputs.images)  # one size: stack the list
    return inputs


def uses_split(spec):
    """Whether `--split` applies to `spec`: .npz files and tfds:NAME."""
    if spec.startswith(TFDS_PREFIX):
        return ":" not in spec[len(TFDS_PREFIX) :]
    return spec.endswith(".npz")


def _is_collection(spec):
    return spec.startswith((SAMPLE_PREFIX, TFDS_PREFIX)) or spec.endswith(".npz")


def _load_collection(spec, split, limit, quiet):
    """`(images, labels)` of a sample, tfds or .npz input, the first `limit` only."""
    if spec.startswith(SAMPLE_PREFIX):
        images, labels = samples.load(spec[len(SAMPLE_PREFIX) :])
    elif spec.startswith(TFDS_PREFIX):
        return _load_tfds(spec, split, limit, quiet)
    else:
        images, labels = _load_npz(spec, split)
    return _to_uint8(images[:limit], spec), None if labels is None else labels[:limit]


def _load_npz(spec, split):
    if not os.path.exists(spec):
        raise FileNotFoundError(f"Input {spec!r} does not exist.")
    try:
        data = np.load(spec, allow_pickle=False)
    except Exception as e:  # zip or format errors from a damaged file
        raise ValueError(f"Cannot read {spec!r} as .npz: {e}") from None
    with data:
        keys = set(data.files)
        if f"x_{split}" in keys:
            images, labels = data[f"x_{split}"], data.get(f"y_{split}")
        elif "images" in keys:
            images, labels = data["images"], data.get("labels")
        else:
            raise ValueError(
                f"{spec!r} holds {sorted(keys)}: expected x_{split} (keras.datasets "
                "layout) or images."
            )
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype("int64")
        if len(labels) != len(images):
            raise ValueError(
                f"{spec!r} holds {len(images)} images but {len(labels)} labels: expected one "
                "label per image."
            )
    return images, labels


def _load_tfds(spec, split, limit, quiet):
    tfds = require_tensorflow(f"The input {spec!r}", module="tensorflow_datasets")

    name, _, spec_split = spec[len(TFDS_PREFIX) :].partition(":")
    if not name:
        raise ValueError(
            f"Expected {TFDS_PREFIX}NAME or {TFDS_PREFIX}NAME:SPLIT. Received {spec!r}."
        )
    try:
        dataset = tfds.load(name, split=spec_split or split, shuffle_files=False)
    except Exception as e:  # unknown names, splits and download failures alike
        raise ValueError(f"Cannot load {spec!r} with tensorflow-datasets: {e}") from None
    keys = sorted(dataset.element_spec)
    if "image" not in keys:
        raise ValueError(f"{spec!r} has the features {keys}: expected an 'image' feature.")
    if limit:
        dataset = dataset.take(limit)
    cardinality = int(dataset.cardinality())
    images, labels = [], []
    for example in progress(
        tfds.as_numpy(dataset), cardinality if cardinality > 0 else None, "reading", quiet
    ):
        images.append(_to_uint8(example["image"], spec, batch=False))
        if "label" in example:
            labels.append(example["label"])
    if not images:
        raise ValueError(f"{spec!r} holds no images.")
    if len({image.shape for image in images}) == 1:
        images = np.stack(images)
    return images, np.asarray(labels, "int64") if labels else None


def _to_uint8(images, source, batch=True):
    """uint8 images with a channel axis, from uint8, int in [0, 255] or float in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3 - (not batch):
        images = images[..., None]
    channel_axis = 1 if batch else 0
    if (
        images.ndim == 4 - (not batch)
        and images.shape[-1] not in (1, 3, 4)
        and images.shape[channel_axis] in (1, 3, 4)
    ):
        images = np.moveaxis(images, channel_axis, -1)
        notice(f"{source!r} holds channels-first images: read them as {images.shape}.")
    expected = "(N, height, width[, channels])" if batch else "(height, width[, channels])"
    if images.ndim != 4 - (not batch) or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{source!r}: expected images of shape {expected} with 1, 3 or 4 channels. "
            f"Received shape={images.shape}."
        )
    if images.dtype == np.uint8:
        return images
    if images.size == 0:
        return images.astype("uint8")
    low, high = images.min(), images.max()
    if np.issubdtype(images.dtype, np.floating) and np.isfinite([low, high]).all():
        if low >= 0 and high <= 1:
            return np.round(images * 255).astype("uint8")
    elif np.issubdtype(images.dtype, np.integer) and low >= 0 and high <= 255:
        return images.astype("uint8")
    raise ValueError(
        f"{source!r}: expected uint8 images, integers in [0, 255] or floats in [0, 1]. "
        f"Received dtype={images.dtype} with values in [{low}, {high}]."
    )


def _as_pil(image):
    """A uint8 (H, W, C) array as a Pillow image."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], "L")
    return Image.fromarray(image, "RGB" if image.shape[-1] == 3 else "RGBA")


def _channels_of(image):
    return 1 if image.mode in _GRAY_MODES else 3


def _conform(images, channels, size, strict, source, names=None, own_size=False):
    """uint8 `(N, H, W, channels)`, or with `own_size` and no `size` a list
    of `(H, W, channels)`: each image converted and resized as `load_images`
    documents, with one notice per kind of change."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if len(images) == 0:
            raise ValueError(f"{source!r} holds no images.")
        if images.shape[-1] == (channels or images.shape[-1]) and images.shape[1:3] == (
            size or images.shape[1:3]
        ):
            return list(images) if own_size and size is None else images
    pil_images = [image if isinstance(image, Image.Image) else _as_pil(image) for image in images]
    if channels is None:
        channels = 1 if all(_channels_of(image) == 1 for image in pil_images) else 3
    if size is None and not own_size:
        width, height = pil_images[0].size
        size = (height, width)
    converted, resized, result = [], [], []
    for index, image in enumerate(pil_images):
        where = repr(names[index]) if names else f"{source!r} (image {index})"
        if _channels_of(image) != channels:
            if strict:
                raise ValueError(
                    f"{where} has {_channels_of(image)} channel(s); the model expects "
                    f"{channels} channel(s). Without --strict it would be converted."
                )
            converted.append(index)
        # Also drops the alpha channel of RGBA arrays.
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and (image.size[1], image.size[0]) != tuple(size):
            if strict:
                raise ValueError(
                    f"{where} is {image.size[1]}x{image.size[0]} (height x width); the model "
                    f"expects {size[0]}x{size[1]}. Without --strict it would be resized."
                )
            resized.append(index)
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        result.append(np.asarray(image).reshape(image.size[1], image.size[0], channels))
    if converted:
        kind = "grayscale" if channels == 1 else "RGB"
        notice(f"converted {len(converted)} image(s) of {source} to {kind} for the model.")
    if resized:
        notice(
            f"resized {len(resized)} image(s) of {source} to {size[0]}x{size[1]} "
            "(bilinear) for the model."
        )
    return result if size is None else np.stack(result)


def _list_files(specs):
    """The files named by `specs`: files as given, folders' files in sorted order."""
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            entries = sorted(
                entry.name
                for entry in os.scandir(spec)
                if entry.is_file() and not entry.name.startswith(".")
            )
            paths.extend(os.path.join(spec, entry) for entry in entries)
        elif os.path.isfile(spec):
            paths.append(spec)
        else:
            raise FileNotFoundError(f"Input {spec!r} does not exist.")
    if not paths:
        raise ValueError(f"No files in {', '.join(repr(spec) for spec in specs)}.")
    return paths


def _read_image(path):
    """The decoded image of `path` as "L" or "RGB"; raises OSError or
    ValueError for files that are not complete images."""
    with Image.open(path) as image:
        # `open` only reads the header: decode now, so that a truncated file
        # fails here and not later.
        image.load()
        return image.convert("L" if image.mode in _GRAY_MODES else "RGB")


def _load_files(specs, channels, size, strict, limit, quiet, own_size):
    paths = _list_files(specs)
    images, names, skipped = [], [], []
    for path in progress(paths, len(paths), "reading", quiet):
        if limit and len(images) == limit:
            break
        try:
            images.append(_read_image(path))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            warn(f"skipped {path!r}: not a readable image ({reason}).")
            skipped.append({"path": path, "reason": reason})
            continue
        names.append(path)
    if not images:
        raise ValueError(
            f"No readable image in {', '.join(repr(spec) for spec in specs)}: "
            f"{len(skipped)} file(s) skipped."
        )
    source = specs[0] if len(specs) == 1 else f"{len(specs)} inputs"
    images = _conform(images, channels, size, strict, source, names, own_size)
    return ImageSet(images, None, names, skipped)
