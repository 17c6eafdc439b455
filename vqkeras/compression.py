"""Learned image compression: a VQ model's codes, entropy-coded under its prior.

Compressing encodes images to code grids with a discrete model (`VQVAE`, or
`RQVAE` with its first k levels), then range-codes the grids with
`constriction`, each code under the conditional distribution an
autoregressive prior (`PixelCNNPrior` or `TransformerPrior`) gives it; the labels of a class-conditional prior are coded
first, uniformly. Decompressing runs the prior code by code to recover the
exact grids, then decodes them to images. The file format is in
`vqkeras.compressed_file` and docs/compression.md.

Example:

```python
codec = vqkeras.compression.Codec("vqvae_mnist", "pixelcnn_vqvae_mnist")
compressed = codec.compress(images, labels=labels)  # images float32 on [0, 1]
len(compressed.data) * 8 / len(images)              # bits per image
restored = vqkeras.compression.decompress(compressed.data)
restored.codes  # == codec.encode_codes(images), exactly
```
"""

import dataclasses

import constriction
import keras
import numpy as np

from vqkeras import compressed_file, prior_coding, validation
from vqkeras.models.autoencoder_model import AutoencoderModel
from vqkeras.models.code_prior import CodePrior
from vqkeras.presets import from_preset, load_metadata


@dataclasses.dataclass(frozen=True)
class Compressed:
    """What `Codec.compress` gives.

    Attributes:
        data: the file's bytes.
        codes: int32 codes `(N, *code_shape)` that were coded.
        nll_bits: the codes' ideal code length under the prior's
            (quantized) probabilities, labels included.
    """

    data: bytes
    codes: np.ndarray
    nll_bits: float


@dataclasses.dataclass(frozen=True)
class Decompressed:
    """What `decompress` gives.

    Attributes:
        images: float32 images `(N, H, W, C)` on [0, 1] (clipped).
        codes: int32 codes `(N, *code_shape)`.
        labels: int32 labels `(N,)`, or None for an unconditional prior.
        header: the file's `vqkeras.compressed_file.Header`.
    """

    images: np.ndarray
    codes: np.ndarray
    labels: np.ndarray | None
    header: compressed_file.Header


def _weights_sha256(name):
    return load_metadata(name)["weights_sha256"]


class Codec:
    """A discrete model and a prior over its codes, ready to compress.

    Args:
        model: preset name or folder of a `VQVAE` or `RQVAE`.
        prior: preset name or folder of a `PixelCNNPrior` or
            `TransformerPrior` over the model's codes (for an `RQVAE`, with `depth` k <= the model's depth: the
            first k levels of each position are coded).
        depth: None, or the number of levels to code (rate control for an
            `RQVAE`); it must be the prior's depth.

    Raises:
        ValueError: a preset of another kind, or a prior that does not fit
            the model's codes.
    """

    def __init__(self, model, prior, depth=None):
        self.model_name, self.prior_name = str(model), str(prior)
        self.model = from_preset(model)
        if not isinstance(self.model, AutoencoderModel) or not self.model.code_grids():
            raise ValueError(
                f"Model {self.model_name!r} is a {type(self.model).__name__}: expected a "
                "discrete model (VQVAE or RQVAE)."
            )
        self.prior = from_preset(prior, expected_class=CodePrior)
        self.model_sha256 = _weights_sha256(model)
        self.prior_sha256 = _weights_sha256(prior)
        self.image_shape = self.model.built_image_shape()
        self.steps = prior_coding.steps_for(self.prior)
        self._check_fit(depth)

    def _check_fit(self, depth):
        grids = self.model.code_grids(self.image_shape)
        if len(grids) != 1:
            raise ValueError(
                f"Model {self.model_name!r} has {len(grids)} code grids; compression supports "
                "models with one (VQVAE, RQVAE)."
            )
        grid, prior = grids[0], self.prior
        if prior.conditioned_on_grid:
            raise ValueError(f"Prior {self.prior_name!r} needs a condition grid: not supported.")
        fits = grid.num_embeddings == prior.num_embeddings
        fits = fits and grid.spatial_shape == prior.grid_shape
        fits = fits and (grid.depth is None) == (prior.depth is None)
        if fits and grid.depth is not None:
            fits = prior.depth <= grid.depth
        if not fits:
            raise ValueError(
                f"Prior {self.prior_name!r} models codes of shape {prior.code_shape} with "
                f"K={prior.num_embeddings}, but model {self.model_name!r} gives "
                f"{tuple(grid.shape)} with K={grid.num_embeddings}: they do not fit."
            )
        if depth is not None:
            depth = validation.positive_int("depth", depth)
            if grid.depth is None or depth != prior.depth:
                levels = "one level" if grid.depth is None else f"depth {prior.depth}"
                raise ValueError(
                    f"depth={depth} needs a prior over the first {depth} levels of an RQVAE's "
                    f"codes; prior {self.prior_name!r} models {levels}."
                )

    @property
    def code_shape(self):
        """The coded codes of one image: `(h, w)` or `(h, w, depth)`."""
        return self.prior.code_shape

    def encode_codes(self, images, batch_size=256):
        """int32 codes `(N, *code_shape)` of `images` `(N, H, W, C)` (float on [0, 1], or uint8)."""
        images = self._check_images(images)
        parts = [
            np.asarray(keras.ops.convert_to_numpy(self.model.encode_indices(images[start:stop])))
            for start, stop in _batches(len(images), batch_size)
        ]
        codes = np.concatenate(parts).astype(np.int32)
        return codes[..., : self.prior.depth] if self.prior.depth is not None else codes

    def _check_images(self, images):
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"Model {self.model_name!r} compresses images of shape (N, "
                f"{', '.join(map(str, self.image_shape))}). Received shape {images.shape}."
            )
        if len(images) == 0:
            raise ValueError("Received no images to compress.")
        validation.check_pixel_values(images)
        return images

    def _check_labels(self, labels, count):
        if not self.prior.conditional:
            if labels is not None:
                raise ValueError(
                    f"Prior {self.prior_name!r} is unconditional: labels are not accepted."
                )
            return None
        if labels is None:
            raise ValueError(
                f"Prior {self.prior_name!r} is class-conditional "
                f"({self.prior.num_classes} classes): labels are required."
            )
        labels = np.asarray(labels)
        if labels.shape != (count,):
            raise ValueError(f"Expected labels of shape ({count},). Received {labels.shape}.")
        validation.check_indices(labels, self.prior.num_classes, name="labels")
        return labels.astype(np.int32)

    def compress(self, images, labels=None, batch_size=256):
        """Compresses `images` `(N, H, W, C)` (float on [0, 1], or uint8; with their
        int `labels` `(N,)` for a class-conditional prior) to a `Compressed`."""
        batch_size = validation.positive_int("batch_size", batch_size)
        codes = self.encode_codes(images, batch_size)
        labels = self._check_labels(labels, len(codes))
        encoder = constriction.stream.queue.RangeEncoder()
        bits = 0.0
        if labels is not None:
            prior_coding.encode_uniform(encoder, labels, self.prior.num_classes)
            bits += len(labels) * np.log2(self.prior.num_classes)
        for start, stop in _batches(len(codes), batch_size):
            batch_labels = None if labels is None else labels[start:stop]
            bits += prior_coding.encode_codes(encoder, self.steps, codes[start:stop], batch_labels)
        payload = np.asarray(encoder.get_compressed(), dtype="<u4").tobytes()
        header = compressed_file.Header(
            model=self.model_name,
            model_sha256=self.model_sha256,
            prior=self.prior_name,
            prior_sha256=self.prior_sha256,
            backend=keras.config.backend(),
            count=len(codes),
            image_shape=list(self.image_shape),
            code_shape=list(self.code_shape),
            num_embeddings=self.prior.num_embeddings,
            num_classes=self.prior.num_classes,
            batch_size=batch_size,
            codes_crc32=compressed_file.crc32(codes.astype("<i4")),
            payload_bytes=len(payload),
            payload_crc32=compressed_file.crc32(payload),
        )
        return Compressed(compressed_file.pack(header, payload), codes, bits)

    def check_header(self, header, source="the file"):
        """Raises `ValueError` unless this codec's weights, backend and codes
        are those that wrote `header`."""
        for what, name, expected, actual in (
            ("model", header.model, header.model_sha256, self.model_sha256),
            ("prior", header.prior, header.prior_sha256, self.prior_sha256),
        ):
            if expected != actual:
                raise ValueError(
                    f"{source} was compressed with {what} {name!r} whose weights have sha256 "
                    f"{expected[:16]}...; the {what} given has {actual[:16]}...: other weights "
                    "cannot decode it."
                )
        backend = keras.config.backend()
        if header.backend != backend:
            raise ValueError(
                f"{source} was compressed on the {header.backend} backend; this is {backend}. "
                "The probabilities differ across backends in their last bits: decode it with "
                f"KERAS_BACKEND={header.backend}."
            )
        if list(header.code_shape) != list(self.code_shape) or header.num_classes != (
            self.prior.num_classes
        ):
            raise ValueError(f"{source} holds codes that prior {self.prior_name!r} does not model.")

    def decompress(self, data, batch_size=256, source="the file"):
        """The `Decompressed` images, codes and labels of a file's bytes."""
        header, payload = compressed_file.unpack(bytes(data), source)
        self.check_header(header, source)
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4"))
        labels = None
        if header.num_classes is not None:
            labels = prior_coding.decode_uniform(decoder, header.count, header.num_classes)
        parts = []
        for start, stop in _batches(header.count, header.batch_size):
            batch_labels = None if labels is None else labels[start:stop]
            parts.append(prior_coding.decode_codes(decoder, self.steps, stop - start, batch_labels))
        codes = np.concatenate(parts)
        if compressed_file.crc32(codes.astype("<i4")) != header.codes_crc32:
            raise ValueError(
                f"{source}: the decoded codes fail their CRC32 check: the prior's probabilities "
                "differ from those it was compressed with (another library version or machine?)."
            )
        images = [
            np.asarray(keras.ops.convert_to_numpy(self.model.decode_indices(codes[start:stop])))
            for start, stop in _batches(len(codes), batch_size)
        ]
        images = np.clip(np.concatenate(images), 0.0, 1.0).astype(np.float32)
        return Decompressed(images, codes, labels, header)


def _batches(count, batch_size):
    for start in range(0, count, batch_size):
        yield start, min(start + batch_size, count)


def read_header(data, source="the file"):
    """The checked `Header` of a compressed file's bytes."""
    return compressed_file.unpack(bytes(data), source)[0]


def decompress(data, model=None, prior=None, batch_size=256, source="the file"):
    """Decompresses a file's bytes with the presets its header names (or
    `model` and `prior`, names or folders holding the same weights).

    Returns:
        A `Decompressed`.

    Raises:
        ValueError: a malformed, truncated or corrupted file, other weights,
            or another Keras backend than the one that compressed it.
    """
    header = read_header(data, source)
    codec = Codec(
        header.model if model is None else model,
        header.prior if prior is None else prior,
    )
    return codec.decompress(data, batch_size, source)
