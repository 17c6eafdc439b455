"""Argument and input checks that raise clear errors.

Every message names what was received and what was expected, so a user never
has to decode a shape error from deep inside a backend.
"""

import functools
import inspect
import numbers
import warnings

import numpy as np
from keras import backend, ops


def positive_int(name, value):
    """Returns `value` as an int, or raises if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def int_in_range(name, value, low, high):
    """Returns `value` as an int, or raises if it is not an integer in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= value <= high
    ):
        raise ValueError(
            f"`{name}` must be an integer in [{low}, {high}]. Received: {name}={value!r}"
        )
    return int(value)


def float_in_range(name, value, low, high, low_inclusive=True, high_inclusive=True):
    """Returns `value` as a float, or raises if it lies outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (np.isfinite(value) and above and below):
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value!r}")
    return value


def positive_int_tuple(name, values):
    """Returns `values` as a non-empty tuple of positive ints."""
    if isinstance(values, numbers.Integral):
        values = (values,)
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers. "
            f"Received: {name}={values!r}"
        ) from None
    if not values:
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers. Received: {name}=()"
        )
    return tuple(positive_int(name, v) for v in values)


def renamed_arguments(**new_names):
    """Decorates an `__init__` whose keyword arguments were renamed, given as
    `old_name="new_name"`: the old keyword (and so a config saved with the
    old key, which `from_config` passes as a keyword) still works, with a
    `DeprecationWarning` naming the new one; giving both raises.

    Example:

    ```python
    @validation.renamed_arguments(beta="commitment_cost")
    def __init__(self, num_embeddings, embedding_dim, commitment_cost=0.25, **kwargs): ...
    ```
    """

    def decorate(init):
        signature = inspect.signature(init)
        parameters = list(signature.parameters.values())[1:]  # after self
        positions = {
            p.name: i for i, p in enumerate(parameters) if p.kind is p.POSITIONAL_OR_KEYWORD
        }

        @functools.wraps(init)
        def wrapper(self, *args, **kwargs):
            for old, new in new_names.items():
                if old not in kwargs:
                    continue
                owner = type(self).__name__
                if new in kwargs or positions.get(new, len(args)) < len(args):
                    value = kwargs[new] if new in kwargs else args[positions[new]]
                    raise ValueError(
                        f"{owner}: `{old}` is the deprecated name of `{new}`: pass only "
                        f"`{new}`. Received both {old}={kwargs[old]!r} and {new}={value!r}."
                    )
                warnings.warn(
                    f"{owner}: `{old}` is deprecated: use `{new}`. A config saved with "
                    f"`{old}` still loads; saving it again writes `{new}`.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return init(self, *args, **kwargs)

        # Keras reads the constructor's arguments with `getfullargspec`, which
        # sees through `__signature__` but not through `functools.wraps`.
        wrapper.__signature__ = signature
        return wrapper

    return decorate


def to_unit_range(images):
    """uint8 images in [0, 255] as float32 in [0, 1]; any other images as
    they are. A NumPy array is scaled by NumPy, a tensor by the backend (JAX
    multiplies by 1/255 instead of dividing: the last bit may differ)."""
    if dtype_of(images) != "uint8":
        return images
    if isinstance(images, np.ndarray):
        return images.astype("float32") / 255.0
    return ops.cast(images, "float32") / 255.0


def dtype_of(x):
    """Standardized dtype name of a tensor, array or nested list."""
    if hasattr(x, "dtype"):
        try:
            return backend.standardize_dtype(x.dtype)
        except ValueError:
            return str(x.dtype)
    return str(np.asarray(x).dtype)


def check_image_batch(images, channels, factor=1, name="images"):
    """Checks a batch of images: rank 4, `channels` channels, float or uint8.

    Works on NumPy arrays, backend tensors and symbolic tensors (only static
    shape information is used), so it can run inside a compiled train step.

    Args:
        images: the batch to check.
        channels: expected number of channels, or None to accept any.
        factor: height and width must be multiples of this (the encoder's
            total downsampling).
        name: how to call the input in error messages.
    """
    if isinstance(images, (list, tuple)):
        kinds = sorted({type(item).__name__ for item in images})
        hint = (
            "file paths? Read them into a uint8 array first (the vqkeras command line reads "
            "image files)"
            if kinds == ["str"]
            else "stack them into one array: np.stack(images)"
        )
        raise TypeError(
            f"Expected {name} as one array of shape (batch, height, width, channels). "
            f"Received a {type(images).__name__} of {len(images)} {'/'.join(kinds)}: {hint}."
        )
    dtype = dtype_of(images)
    if dtype != "uint8" and "float" not in dtype:
        hint = ""
        if "int" in dtype:
            hint = " Pixel values in [0, 255]? Pass images.astype('uint8')."
        raise TypeError(
            f"Expected {name} as floats in [0, 1] or uint8 in [0, 255]. Received dtype={dtype}."
            + hint
        )
    shape = tuple(images.shape)
    expected = f"(batch, height, width, {channels if channels else 'channels'})"
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3 and channels is not None and shape[-1] == channels:
            hint = " One image? Add the batch axis: images[None]."
        elif len(shape) == 3 and channels == 1:
            hint = " Grayscale without a channel axis? Add it: images[..., None]."
        raise ValueError(
            f"Expected {name} of rank 4 with shape {expected}. "
            f"Received shape={shape} (rank {len(shape)}).{hint}"
        )
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        hint = ""
        if shape[1] == channels:
            hint = " Channels first? Transpose: np.transpose(images, (0, 2, 3, 1))."
        raise ValueError(
            f"Expected {name} with {channels} channel(s), shape {expected}. "
            f"Received shape={shape} with {shape[-1]} channel(s).{hint}"
        )
    for axis, size in zip(("height", "width"), shape[1:3]):
        if size is not None and size % factor:
            raise ValueError(
                f"Expected {name} whose height and width are multiples of {factor} "
                f"(the encoder's downsampling factor). Received shape={shape}: "
                f"{axis} {size} is not."
            )


# Resampling (resizing, JPEG decoding to floats) may overshoot [0, 1] by a
# rounding's worth; anything further out is another scale, not noise.
PIXEL_RANGE_TOLERANCE = 1e-3


def check_pixel_values(images, name="images"):
    """Checks the values of a NumPy batch of float images: finite, in [0, 1].

    Tensors are not read (that would copy them from the device on every
    step); uint8 images are always in range.
    """
    if not isinstance(images, np.ndarray) or images.dtype.kind != "f" or not images.size:
        return
    finite = np.isfinite(images)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise ValueError(
            f"Expected finite {name}. Received {len(bad)} NaN or inf value(s), the first at "
            f"index {tuple(int(i) for i in bad[0])}."
        )
    low, high = float(images.min()), float(images.max())
    if low < -PIXEL_RANGE_TOLERANCE or high > 1.0 + PIXEL_RANGE_TOLERANCE:
        hint = ""
        if low >= 0.0 and high <= 255.0:
            hint = " They look like pixel values in [0, 255]: divide by 255, or pass uint8."
        raise ValueError(
            f"Expected float {name} in [0, 1] (or uint8 in [0, 255]). "
            f"Received values in [{low:g}, {high:g}].{hint}"
        )


def check_indices(indices, num_embeddings, name="indices"):
    """Checks that concrete integer `indices` lie in [0, num_embeddings).

    Values are only checked for eager inputs; inside a compiled function the
    dtype is still checked.
    """
    dtype = dtype_of(indices)
    if "int" not in dtype:
        raise TypeError(
            f"Expected integer {name} in [0, {num_embeddings}). Received dtype={dtype}."
        )
    if ops.is_tensor(indices) or isinstance(indices, np.ndarray):
        try:
            values = np.asarray(ops.convert_to_numpy(indices))
        except Exception:  # symbolic tensor inside a traced function
            return
        if values.size and (values.min() < 0 or values.max() >= num_embeddings):
            raise ValueError(
                f"Expected {name} in [0, {num_embeddings}). "
                f"Received values in [{values.min()}, {values.max()}]."
            )


def check_code_grids(indices, code_shape, num_embeddings):
    """Checks a batch of code grids for a prior: shape `(batch, *code_shape)`,
    integer codes in [0, num_embeddings)."""
    shape = tuple(indices.shape)
    if len(shape) != 1 + len(code_shape) or any(
        size is not None and size != wanted for size, wanted in zip(shape[1:], code_shape)
    ):
        expected = ", ".join(map(str, code_shape))
        hint = " One grid? Add the batch axis: grids[None]." if shape == tuple(code_shape) else ""
        raise ValueError(
            f"Expected code grids of shape (batch, {expected}). Received shape={shape}.{hint}"
        )
    check_indices(indices, num_embeddings, name="code indices")


def check_class_labels(labels, num_classes, batch_size):
    """Checks the labels given with `batch_size` code grids to a prior with
    `num_classes` classes (None: an unconditional prior, which takes none)."""
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                "This prior is unconditional (num_classes=None): labels are not accepted."
            )
        return
    if labels is None:
        raise ValueError(
            f"This prior is class-conditional (num_classes={num_classes}): labels of "
            "shape (batch,) are required."
        )
    label_shape = tuple(labels.shape)
    if len(label_shape) != 1 or (
        None not in (label_shape[0], batch_size) and label_shape[0] != batch_size
    ):
        raise ValueError(
            f"Expected labels of shape ({batch_size},), one per code grid. "
            f"Received shape={label_shape}."
        )
    check_indices(labels, num_classes, name="labels")


def top_k(value, num_embeddings):
    """Returns `value` as an int in [1, num_embeddings], or None if it is None."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not (1 <= value <= num_embeddings)
    ):
        raise ValueError(
            f"`top_k` must be None or an integer in [1, {num_embeddings}]. Received: top_k={value!r}"
        )
    return int(value)


def sample_labels(labels, num, num_classes):
    """Returns the labels of `num` samples of a prior with `num_classes`
    classes (None: unconditional) as a NumPy array, or None if none are given."""
    if labels is None:
        return None
    if num_classes is None:
        raise ValueError(
            "This prior is unconditional (num_classes=None): `labels` are not accepted."
        )
    labels = np.asarray(ops.convert_to_numpy(labels))
    if labels.shape != (num,):
        raise ValueError(
            f"Expected labels of shape ({num},), one per sample. Received shape={labels.shape}."
        )
    check_indices(labels, num_classes, name="labels")
    return labels
