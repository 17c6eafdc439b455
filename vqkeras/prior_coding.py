"""Entropy coding of code grids under an autoregressive prior, with `constriction`.

The range coder needs, for every code, a probability table that is exactly
the same when encoding and when decoding. `steps_for(prior)` gives the
computation for a prior: `PriorSteps` for a `PixelCNNPrior`,
`TransformerSteps` for a `TransformerPrior` (a `MaskGITPrior` gives no
code-by-code probabilities and cannot code).

Decoding knows only the codes before the current one and runs the prior one
code at a time, as its sampling does. PixelCNN: the vertical stacks once per
row on that row, the horizontal stacks once per position on that position
(both reading the rows and positions before from buffers), the head once per
code. Transformer: one step per code on the key/value cache.

Encoding knows every code, but one forward pass of the prior over whole
grids multiplies matrices of other shapes than those steps, and the kernels
may then sum in another order: the last bits of the logits differ (PyTorch
on one thread, for the PixelCNN; the Transformer on every backend). So
encoding runs the very steps that decoding runs, with the known codes fed
in: the same computation on the same inputs, hence the same bits on one
backend and machine (tests/test_compression.py checks it on each backend).
Eager, or as a TensorFlow graph (which runs the same kernels); XLA (JAX's
`jit`) could fuse a step differently in another trace, so JAX runs eagerly.
The logits are not bit-identical *across* backends (differences of about
1e-5), so a file records the backend that wrote it and is decoded on that
backend only. The tables are integer frequencies computed from the float32
logits in float64 NumPy (`probability_tables`). As the last guard, a file
stores a CRC32 of its codes, checked after decoding: logits that differed
after all (another library version, CPU or thread count) give a clear
error, never wrong images.
"""

import contextlib

import constriction
import keras
import numpy as np
from keras import ops

# Integer frequencies per table: every code gets at least one count, so no
# code is impossible; 2**16 stays below constriction's 24-bit precision, so
# its own quantization of the tables changes them little.
FREQUENCY_TOTAL = 2**16

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def probability_tables(logits):
    """float64 probability tables `(n, K)` from float32 logits `(n, K)`.

    The tables are integer frequencies summing to about `FREQUENCY_TOTAL`
    (at least 1 each) divided by their sum: a function of the logits'
    float32 values alone, computed in float64 NumPy.
    """
    # In place: the tables of a batch are tens of millions of numbers.
    tables = np.array(logits, dtype=np.float64)
    num_codes = tables.shape[-1]
    tables -= tables.max(axis=-1, keepdims=True)
    np.exp(tables, out=tables)
    tables *= (FREQUENCY_TOTAL - num_codes) / tables.sum(axis=-1, keepdims=True)
    np.floor(tables, out=tables)
    tables += 1.0
    tables /= tables.sum(axis=-1, keepdims=True)
    return tables


def code_length_bits(tables, codes):
    """Ideal code length, in bits, of `codes` `(n,)` under `tables` `(n, K)`."""
    return float(-np.log2(tables[np.arange(len(codes)), codes]).sum())


@contextlib.contextmanager
def _no_grad():
    if keras.config.backend() == "torch":
        import torch

        with torch.no_grad():
            yield
    else:
        yield


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def _compiled(function):
    """`function` as a `tf.function` on TensorFlow, else as it is.

    A TensorFlow graph runs the same kernels as eager ops, and gave the same
    bits for both computations (tests/test_compression.py checks it); an XLA
    compilation (JAX's `jit`) may fuse them differently, so JAX and PyTorch
    run eagerly.
    """
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    return function


def _index(value):
    # A tensor index keeps a tf.function from being traced once per value.
    return (
        ops.convert_to_tensor(value, "int32") if keras.config.backend() == "tensorflow" else value
    )


def _labels(labels):
    return None if labels is None else ops.convert_to_tensor(labels, "int32")


def steps_for(prior):
    """The coding steps of `prior`: a `PriorSteps` (PixelCNN) or a
    `TransformerSteps`. Raises a clear error for a prior that cannot code."""
    from vqkeras.models import PixelCNNPrior, TransformerPrior

    if isinstance(prior, PixelCNNPrior):
        return PriorSteps(prior)
    if isinstance(prior, TransformerPrior):
        return TransformerSteps(prior)
    raise ValueError(
        f"A {type(prior).__name__} gives no code-by-code probabilities to code with: "
        "compression needs an autoregressive prior (PixelCNNPrior or TransformerPrior)."
    )


class PriorSteps:
    """A `PixelCNNPrior`'s logits one code at a time, with the codes known
    (encoding) or decoded so far (decoding): the same steps either way,
    hence bit-identical logits.

    Args:
        prior: a built `PixelCNNPrior` without a condition grid.
    """

    def __init__(self, prior):
        self.prior = prior
        self._vertical_row_step = _compiled(prior.vertical_row_step)
        self._position_step = _compiled(prior.horizontal_position_step)
        self._position_logits = _compiled(prior.position_logits)

    def all_logits(self, grids, labels):
        """float32 logits `(batch, h, w, levels, K)` of every code of int
        `grids` given int `labels` `(batch,)` (None for an unconditional
        prior), from the decoding steps fed the known codes."""
        flat = np.asarray(grids, dtype=np.int32).reshape(len(grids), -1)
        logits = []

        def known(step_logits):
            logits.append(step_logits)
            return flat[:, len(logits) - 1]

        self.decode(len(flat), labels, known)
        return np.stack(logits, axis=1).reshape(*np.shape(grids)[:3], self.prior.levels, -1)

    def decode(self, batch, labels, next_codes):
        """Code grids `(batch, *code_shape)` decoded in raster order (levels
        innermost): `next_codes(logits)` turns the logits `(batch, K)` of one
        code into that code of every grid, as int32 `(batch,)`. The prior
        runs as its `sample` does: `vertical_row_step` once per row,
        `horizontal_position_step` once per position, the head once per
        code."""
        prior = self.prior
        height, width = prior.grid_shape
        grids = np.zeros((batch, *prior.code_shape), dtype=np.int32)
        labels = _labels(labels)
        with _no_grad():
            weights = prior.position_weights()
            buffers = prior.initial_step_state(batch)
            for row in range(height):
                row_terms, buffers = self._vertical_row_step(
                    ops.convert_to_tensor(grids, "int32"), buffers, _index(row), labels, None
                )
                row_buffers = prior.initial_row_buffers(batch)
                for column in range(width):
                    features, row_buffers = self._position_step(
                        ops.convert_to_tensor(grids[:, row], "int32"),
                        row_buffers,
                        row_terms,
                        _index(column),
                        weights,
                    )
                    for level in range(prior.levels):
                        codes_here = None
                        if prior.depth is not None:
                            codes_here = ops.convert_to_tensor(grids[:, row, column], "int32")
                        logits = _numpy(self._position_logits(features, weights, codes_here))
                        codes = next_codes(logits[:, level])
                        if prior.depth is None:
                            grids[:, row, column] = codes
                        else:
                            grids[:, row, column, level] = codes
        return grids


class TransformerSteps:
    """A `TransformerPrior`'s logits one code at a time on its key/value
    cache, with the codes known (encoding) or decoded so far (decoding): the
    same steps either way, hence bit-identical logits.

    Args:
        prior: a built `TransformerPrior` without a condition grid.
    """

    def __init__(self, prior):
        self.prior = prior
        self._step = _compiled(prior.next_logits)

    def _run(self, batch, labels, next_codes):
        """Codes `(batch, L)`: code t is `next_codes(t, logits)` of its logits `(batch, K)`."""
        prior = self.prior
        start_labels = ops.convert_to_tensor(
            np.full(batch, prior.null_class) if labels is None else labels, "int32"
        )
        codes = np.zeros((batch, prior.length), dtype=np.int32)
        with _no_grad():
            cache = prior.initial_cache(batch)
            for index in range(prior.length):
                previous = ops.convert_to_tensor(codes[:, max(index - 1, 0)], "int32")
                logits, cache = self._step(previous, _index(index), start_labels, cache)
                codes[:, index] = next_codes(index, _numpy(logits))
        return codes

    def all_logits(self, grids, labels):
        """float32 logits `(batch, h, w, levels, K)` of every code of int
        `grids`, given int `labels` `(batch,)` (None: the unconditional
        distribution), from the decoding steps fed the known codes."""
        flat = np.asarray(grids, dtype=np.int32).reshape(len(grids), -1)
        logits = []

        def known(index, step_logits):
            logits.append(step_logits)
            return flat[:, index]

        self._run(len(flat), labels, known)
        return np.stack(logits, axis=1).reshape(*np.shape(grids)[:3], self.prior.levels, -1)

    def decode(self, batch, labels, next_codes):
        """Code grids `(batch, *code_shape)` decoded in raster order (levels
        innermost), as `PriorSteps.decode`."""
        codes = self._run(batch, labels, lambda index, logits: next_codes(logits))
        return codes.reshape(batch, *self.prior.code_shape)


def encode_codes(encoder, steps, grids, labels):
    """Appends `grids` `(batch, *code_shape)` to the `RangeEncoder` in raster
    order (levels innermost, the batch within each code), with the
    probabilities of `steps` (of `steps_for`); returns their ideal code
    length in bits.

    The steps run as when decoding, fed the known codes, and each code's
    tables are computed and coded as soon as its logits come: the same
    `(batch, K)` arrays as the decoder's, and no tables of a whole batch of
    grids in memory."""
    flat = np.asarray(grids, dtype=np.int32).reshape(len(grids), -1)
    coded = []

    def known(logits):
        codes = flat[:, len(coded)]
        tables = probability_tables(logits)
        encoder.encode(codes, _CATEGORICAL, tables)
        coded.append(code_length_bits(tables, codes))
        return codes

    steps.decode(len(flat), labels, known)
    return sum(coded)


def decode_codes(decoder, steps, batch, labels):
    """Reads `batch` code grids from the `RangeDecoder`, as `encode_codes` wrote them."""

    def next_codes(logits):
        return np.asarray(decoder.decode(_CATEGORICAL, probability_tables(logits)), np.int32)

    return steps.decode(batch, labels, next_codes)


def encode_uniform(encoder, values, count):
    """Appends int `values` in `[0, count)` to the encoder, each costing log2(count) bits."""
    values = np.asarray(values, dtype=np.int32)
    tables = np.full((len(values), count), 1.0 / count)
    encoder.encode(values, _CATEGORICAL, tables)


def decode_uniform(decoder, num, count):
    """Reads `num` values written by `encode_uniform`."""
    tables = np.full((num, count), 1.0 / count)
    return np.asarray(decoder.decode(_CATEGORICAL, tables), dtype=np.int32)
