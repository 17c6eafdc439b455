"""The container of `vqkeras compress`: a checked header, then the coded stream.

Layout (integers big-endian; see docs/compression.md):

    magic          4 bytes  b"VQKC"
    version        1 byte   FORMAT_VERSION
    header length  4 bytes  n
    header CRC32   4 bytes  CRC32 of the n header bytes
    header         n bytes  UTF-8 JSON object (`Header` fields)
    payload        the range coder's 32-bit words, little-endian; its length
                   and CRC32 are in the header

Everything is checked before any decoding: a truncated, extended or
corrupted file raises `ValueError` naming what is wrong.
"""

import dataclasses
import json
import struct
import zlib

MAGIC = b"VQKC"
# The layout has not changed since version 1; the version changes with the
# computation of a PixelCNN prior's probabilities, whose last bits a decoder
# must reproduce. 2: one-row and one-position steps (version 1: whole rows).
# 3: the vertical stacks' row convolutions as matrix products.
FORMAT_VERSION = 3
_PREFIX = struct.Struct(">4sBII")
# A header is a few hundred bytes; a larger length is corruption.
_MAX_HEADER_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Header:
    """What a compressed file says about its contents.

    Attributes:
        model: the discrete model's preset name or folder, as given.
        model_sha256: sha256 of the model's weights (its metadata.json).
        prior: the PixelCNN prior's preset name or folder, as given.
        prior_sha256: sha256 of the prior's weights.
        backend: the Keras backend that computed the probabilities.
        count: number of images.
        image_shape: `[H, W, C]` of the images.
        code_shape: `[h, w]` or `[h, w, depth]` of one image's coded codes.
        num_embeddings: K, the number of values of a code.
        num_classes: the prior's number of classes (labels are coded in
            the payload), or None for an unconditional prior.
        batch_size: images per coded batch (the order of the codes).
        codes_crc32: CRC32 of all codes, int32 little-endian, in image order.
        payload_bytes: length of the payload.
        payload_crc32: CRC32 of the payload.
    """

    model: str
    model_sha256: str
    prior: str
    prior_sha256: str
    backend: str
    count: int
    image_shape: list
    code_shape: list
    num_embeddings: int
    num_classes: int | None
    batch_size: int
    codes_crc32: int
    payload_bytes: int
    payload_crc32: int


def crc32(data):
    """CRC32 of bytes (or of a NumPy array's bytes)."""
    return zlib.crc32(memoryview(data).cast("B")) & 0xFFFFFFFF


def pack(header, payload):
    """The bytes of a file holding `header` and `payload`."""
    text = json.dumps(dataclasses.asdict(header), sort_keys=True).encode("utf-8")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text), crc32(text)) + text + payload


def unpack(data, source="the file"):
    """`(Header, payload bytes)` of a file's bytes, after checking them all.

    Raises:
        ValueError: not a vqkeras compressed file, another format version,
            or a truncated, extended or corrupted file.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"{source} is not a vqkeras compressed file (it does not start with {MAGIC!r})."
        )
    if len(data) < _PREFIX.size:
        raise ValueError(f"{source} is truncated: {len(data)} bytes, shorter than its header.")
    _, version, header_bytes, header_crc = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{source} has format version {version}; this vqkeras reads version "
            f"{FORMAT_VERSION} only (earlier versions come from an earlier vqkeras: decode "
            "them with the vqkeras that wrote them)."
        )
    end = _PREFIX.size + header_bytes
    if header_bytes > _MAX_HEADER_BYTES or end > len(data):
        raise ValueError(
            f"{source} is truncated or corrupted: its header says {header_bytes} header bytes, "
            f"but the file has {len(data) - _PREFIX.size} after the prefix."
        )
    text = data[_PREFIX.size : end]
    if crc32(text) != header_crc:
        raise ValueError(f"{source} is corrupted: its header fails its CRC32 check.")
    try:
        header = Header(**json.loads(text.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{source} has an unreadable header: {e}") from None
    payload = data[end:]
    if len(payload) != header.payload_bytes:
        what = "truncated" if len(payload) < header.payload_bytes else "longer than it should be"
        raise ValueError(
            f"{source} is {what}: its header says {header.payload_bytes} bytes of coded "
            f"codes, the file holds {len(payload)}."
        )
    if crc32(payload) != header.payload_crc32:
        raise ValueError(f"{source} is corrupted: its coded codes fail their CRC32 check.")
    return header, payload
