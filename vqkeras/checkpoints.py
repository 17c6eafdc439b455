"""The tensors of PyTorch-world checkpoint files, as NumPy arrays.

    read_state_dict(path)   name -> float32 (or integer) array

Two kinds of file:

- `.safetensors`: read here from the format's specification (an 8-byte
  little-endian header length, a JSON header of names, dtypes, shapes and
  byte ranges, then the raw little-endian data), with neither PyTorch nor
  the `safetensors` package, whose NumPy reader refuses bfloat16. Every
  header entry is checked against the file's size before any data is read.
- `.ckpt`, `.bin`, `.pt`, `.pth`: PyTorch pickles, read with
  `torch.load(weights_only=True)`, which rebuilds tensors and plain
  containers only and never runs code from the file. A PyTorch Lightning
  checkpoint's `state_dict` is taken.

Floating-point tensors of any precision (bfloat16 and float16 included) come
out as float32: the precision Keras weights are set in.
"""

import json
import os
import struct

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")

# safetensors dtype -> (NumPy dtype of the stored bytes, bytes per element).
# bfloat16 is read as the upper halves of float32 values.
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# A header larger than this is not a checkpoint's (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100_000_000


def read_state_dict(path):
    """The tensors of a checkpoint file by name.

    Args:
        path: a `.safetensors` file, or a PyTorch `.ckpt`, `.bin`, `.pt` or
            `.pth` file (these need PyTorch).

    Returns:
        A dict from tensor name to NumPy array: float32 for floating-point
        tensors, the stored integer or bool type otherwise.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: for another suffix, a damaged or inconsistent file, or a
            pickle that holds more than tensors and plain containers.
        ImportError: for a PyTorch file without PyTorch installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return read_torch_checkpoint(path)
    raise ValueError(
        f"Cannot read checkpoint {path}: expected a file ending in "
        f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}. Received the suffix {suffix!r}."
    )


def read_safetensors(path):
    """The tensors of a `.safetensors` file (see the module docstring)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file: it has {size} bytes.")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(size - 8, _MAX_HEADER_BYTES):
            raise ValueError(
                f"{path} is not a safetensors file, or is truncated: its header claims "
                f"{header_bytes} bytes in a file of {size}."
            )
        try:
            header = json.loads(f.read(header_bytes))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} has a damaged safetensors header: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a damaged safetensors header: not a JSON object.")
    data_start = 8 + header_bytes
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(size - data_start,))
    tensors = {}
    for name, entry in header.items():
        if name != "__metadata__":
            tensors[name] = _safetensors_tensor(path, name, entry, data)
    return tensors


def _safetensors_tensor(path, name, entry, data):
    try:
        dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        shape = tuple(int(n) for n in shape)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{path}: the header entry of {name!r} is not a tensor description "
            f"(dtype, shape, data_offsets). Received: {entry!r}"
        ) from None
    if dtype_name not in _SAFETENSORS_DTYPES:
        raise ValueError(
            f"{path}: tensor {name!r} has dtype {dtype_name}; expected one of "
            f"{', '.join(_SAFETENSORS_DTYPES)}."
        )
    dtype = _SAFETENSORS_DTYPES[dtype_name]
    count = int(np.prod(shape, dtype=np.int64))
    if (
        min(shape, default=0) < 0
        or not 0 <= begin <= end <= len(data)
        or end - begin != count * dtype.itemsize
    ):
        raise ValueError(
            f"{path}: tensor {name!r} of shape {shape} and dtype {dtype_name} does not fit its "
            f"byte range [{begin}, {end}) in a data section of {len(data)} bytes."
        )
    values = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    if dtype_name == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    return np.array(values)


def read_torch_checkpoint(path):
    """The tensors of a PyTorch pickle (see the module docstring)."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {path} needs PyTorch (pip install torch), or convert the checkpoint to "
            ".safetensors, which vqkeras reads without it."
        ) from None
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(
            f"Cannot load {path} as a PyTorch checkpoint of weights alone (torch.load with "
            f"weights_only=True, which never runs code from the file): {error}"
        ) from None
    if isinstance(contents, dict) and isinstance(contents.get("state_dict"), dict):
        contents = contents["state_dict"]  # a PyTorch Lightning checkpoint
    if not isinstance(contents, dict):
        raise ValueError(
            f"{path} holds a {type(contents).__name__}; expected a dict of tensors (a state dict)."
        )
    tensors = {}
    for name, value in contents.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            tensors[name] = (value.float() if value.is_floating_point() else value).numpy()
    return tensors
