import math

import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.layers.quantizer import Quantizer
from vqkeras.metrics import LOG_FLOOR

# Indices are int32, and the code usage metrics count every code.
MAX_BITS = 30
# The exact batch entropy of a group of g bits takes N x 2^g multiply-adds and
# 2^g probabilities; beyond this many bits the default is to factorise over
# groups.
MAX_EXACT_BITS = 12


def sign_codes(bits):
    """The 2^bits codes in {-1, 1}^bits, `(2^bits, bits)` float32: row j has
    +1 in channel i where bit i of j is set (channel 0 the least significant)."""
    powers = 2 ** np.arange(bits)
    return np.where(np.arange(2**bits)[:, None] & powers, 1.0, -1.0).astype("float32")


def entropy(probabilities, axis=-1):
    """-sum p log p; the log is clipped so that p = 0 adds 0, not NaN."""
    return -ops.sum(probabilities * ops.log(ops.maximum(probabilities, LOG_FLOOR)), axis=axis)


@keras.saving.register_keras_serializable(package="vqkeras")
class LookupFreeQuantizer(Quantizer):
    """Lookup-free quantization (LFQ): each channel quantized to its sign.

    The codebook is implicit, the 2^bits corners {-1, 1}^bits: channel i of
    the latent z is quantized to `sign(z_i)` (+1 for z_i > 0, -1 otherwise)
    with a straight-through gradient, and the index is the integer whose bit
    i is set where z_i > 0, channel 0 the least significant bit:
    `index = sum_i [z_i > 0] * 2^i`. No distances to a codebook are needed,
    so the codebook can be huge (MAGVIT-v2 uses 2^18 codes).

    Two per-sample loss terms:

    - `entropy_loss = entropy_weight * (E[H(p(c|z))] - diversity_weight *
      H(E[p(c|z)]))` over soft assignments `p(c|z) = softmax_c(-||z - c||^2
      / temperature)`: low per-position entropy makes each latent confident
      of its code, high entropy of the batch-mean distribution makes the
      batch use many codes (MAGVIT-v2, eq. 5). The first term is the mean
      over the sample's positions; the second is computed over the whole
      batch and is the same for every sample, so that the batch mean of the
      vector is the paper's loss.
    - `commitment_loss = commitment_weight * ||z - sg(sign(z))||^2`, the mean
      over the sample's positions and channels.

    `p(c|z)` over the corners is a product over the channels (`||z - c||^2`
    is a sum over them), so the per-position entropy is a sum over any
    grouping of the channels, exactly. The batch-mean distribution is not a
    product: with `group_bits = bits` its entropy is exact (a matrix
    product over the batch with 2^bits outputs, `entropy_terms`); with
    smaller groups each group's marginal entropy is computed over its
    2^group_bits codes and they are summed, an upper bound that is exact
    when the groups are independent over the batch (as in Open-MAGVIT2's
    factorised codes).

    When the inputs' width D (`embedding_dim`) differs from `bits`, Dense
    layers project the inputs to `bits` channels and the signs back to D
    (both in float32); the quantized output and `indices_to_codes` are then
    the projected-back vectors.

    Args:
        bits: the number of channels quantized, in [1, 30]; there are
            `num_embeddings = 2^bits` codes. The code usage metrics that
            the families log keep two counters per code.
        embedding_dim: D, the inputs' last axis (default: `bits`, no
            projections).
        entropy_weight: weight of the entropy loss (0.1 in MAGVIT-v2).
        commitment_weight: weight of the commitment loss (0.25 in
            MAGVIT-v2).
        diversity_weight: weight of the batch entropy inside the entropy
            loss (1 in MAGVIT-v2).
        group_bits: the channels of each group of the entropy loss: the
            exact entropy for `group_bits = bits`. Default: exact up to 12
            bits, otherwise the fewest groups of at most 12 bits, as even
            as possible (two groups of 9 for 18 bits). The last group may
            be smaller.
        temperature: of the soft assignments, > 0.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step (no effect: LFQ has
            no state).

    Returns:
        A dict with `"quantized"` (the input's shape; its gradient passes
        straight through the sign), `"indices"` (int32, the input's shape
        without its last axis), `"entropy_loss"` and `"commitment_loss"`
        (float32, shape `(B,)`).

    Example:

    >>> lfq = LookupFreeQuantizer(bits=10)
    >>> out = lfq(keras.random.normal((8, 4, 4, 10)))
    >>> out["indices"].shape, lfq.num_embeddings
    ((8, 4, 4), 1024)

    Reference:
        Yu et al., "Language Model Beats Diffusion: Tokenizer is Key to
        Visual Generation" (MAGVIT-v2), 2023, section 3.1; Luo et al.,
        "Open-MAGVIT2", 2024 (factorised entropy).
    """

    loss_names = ("entropy_loss", "commitment_loss")

    def __init__(
        self,
        bits,
        embedding_dim=None,
        entropy_weight=0.1,
        commitment_weight=0.25,
        diversity_weight=1.0,
        group_bits=None,
        temperature=1.0,
        **kwargs,
    ):
        bits = validation.int_in_range("bits", bits, 1, MAX_BITS)
        if embedding_dim is None:
            embedding_dim = bits
        super().__init__(embedding_dim=embedding_dim, num_embeddings=2**bits, **kwargs)
        self.bits = bits
        weight = dict(low=0.0, high=float("inf"), high_inclusive=False)
        self.entropy_weight = validation.float_in_range("entropy_weight", entropy_weight, **weight)
        self.commitment_weight = validation.float_in_range(
            "commitment_weight", commitment_weight, **weight
        )
        self.diversity_weight = validation.float_in_range(
            "diversity_weight", diversity_weight, **weight
        )
        if group_bits is not None:
            group_bits = validation.int_in_range("group_bits", group_bits, 1, min(bits, 16))
        self.group_bits = group_bits
        self.temperature = validation.float_in_range(
            "temperature", temperature, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )
        if group_bits is None:
            groups = math.ceil(bits / MAX_EXACT_BITS)
            group_bits = math.ceil(bits / groups)
        # (start, size) of each group of channels, and its codes.
        self._groups = [
            (start, min(group_bits, bits - start)) for start in range(0, bits, group_bits)
        ]
        # The codes of each half of a group (`entropy_terms`).
        halves = {part for _, size in self._groups for part in ((size + 1) // 2, size // 2)}
        self._group_codes = {size: sign_codes(size) for size in halves if size > 0}
        self.projected = self.embedding_dim != bits
        if self.projected:
            self.project_in = keras.layers.Dense(bits, dtype="float32", name="project_in")
            self.project_out = keras.layers.Dense(
                self.embedding_dim, dtype="float32", name="project_out"
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        if self.projected:
            self.project_in.build(input_shape)
            self.project_out.build((*tuple(input_shape)[:-1], self.bits))

    def _latents(self, inputs):
        self.check_inputs(inputs)
        z = ops.cast(inputs, "float32")
        return self.project_in(z) if self.projected else z

    def _indices(self, z):
        powers = ops.convert_to_tensor(2 ** np.arange(self.bits, dtype="int32"))
        return ops.cast(ops.sum(ops.cast(z > 0, "int32") * powers, axis=-1), "int32")

    def inputs_to_indices(self, inputs):
        # The signs alone: no need for the entropy's soft assignments.
        if not self.built:
            self.build(tuple(inputs.shape))
        return self._indices(self._latents(inputs))

    def entropy_terms(self, z):
        """The per-sample mean entropy of the soft assignments `(B,)` and
        the entropy of their batch mean (a scalar), summed over the groups.

        Neither needs the `(positions, 2^bits)` assignments themselves:
        `p(c|z)` is a product over the channels, so a position's entropy is
        the sum of its channels' binary entropies, and the batch mean over
        a group's codes is the batch mean of an outer product of the
        distributions over its two halves, one `(2^a, positions) x
        (positions, 2^b)` matrix product. Both are exact; the work is a few
        passes over `2^a + 2^b` probabilities per position instead of
        `2^(a + b)`."""
        flat = ops.reshape(z, (ops.shape(z)[0], -1, self.bits))
        # -||z - c||^2 = 2 z.c - ||z||^2 - bits, so p(c_i = +1 | z) =
        # sigmoid(4 z_i / temperature), and the binary entropy of
        # sigmoid(x) is softplus(x) - x sigmoid(x).
        bit_logits = 4.0 * flat / self.temperature
        bit_entropy = ops.softplus(bit_logits) - bit_logits * ops.sigmoid(bit_logits)
        sample_entropy = ops.mean(ops.sum(bit_entropy, axis=-1), axis=1)
        positions = ops.reshape(flat, (-1, self.bits))
        batch_entropy = 0.0
        for start, size in self._groups:
            half = (size + 1) // 2
            first = self._code_probabilities(positions[:, start : start + half])
            if size == half:
                mean = ops.mean(first, axis=0)
            else:
                second = self._code_probabilities(positions[:, start + half : start + size])
                count = ops.cast(ops.shape(positions)[0], "float32")
                mean = ops.reshape(ops.matmul(ops.transpose(first), second), (-1,)) / count
            batch_entropy = batch_entropy + entropy(mean)
        return sample_entropy, batch_entropy

    def _code_probabilities(self, z):
        """`p(c|z)` over the 2^size codes of `size` channels, `(positions,
        2^size)`."""
        codes = ops.convert_to_tensor(self._group_codes[z.shape[-1]])
        return ops.softmax(2.0 * ops.matmul(z, ops.transpose(codes)) / self.temperature, axis=-1)

    def call(self, inputs, training=None):
        z = self._latents(inputs)
        signs = ops.where(z > 0, 1.0, -1.0)
        sample_entropy, batch_entropy = self.entropy_terms(z)
        # MAGVIT-v2, eq. 5: confident per position, diverse over the batch.
        entropy_loss = self.entropy_weight * (
            sample_entropy - self.diversity_weight * batch_entropy
        )
        axes = tuple(range(1, len(z.shape)))
        commitment = ops.mean(ops.square(z - ops.stop_gradient(signs)), axis=axes)
        # Straight-through estimator: the forward pass takes the sign, the
        # backward pass copies the gradient to z.
        quantized = z + ops.stop_gradient(signs - z)
        if self.projected:
            quantized = self.project_out(quantized)
        return {
            "quantized": ops.cast(quantized, self.compute_dtype),
            "indices": self._indices(z),
            "entropy_loss": entropy_loss,
            "commitment_loss": self.commitment_weight * commitment,
        }

    def indices_to_codes(self, indices):
        """The float32 vectors `(..., D)` of integer `indices`: the signs
        {-1, 1}^bits of their bits, projected back to D if the layer
        projects."""
        validation.check_indices(indices, self.num_embeddings)
        if self.projected and not self.built:
            raise ValueError(
                f"LookupFreeQuantizer '{self.name}' has no projections yet: build it or call "
                "it on inputs before looking up indices."
            )
        powers = ops.convert_to_tensor(2 ** np.arange(self.bits, dtype="int32"))
        bit = ops.mod(ops.floor_divide(ops.expand_dims(ops.cast(indices, "int32"), -1), powers), 2)
        signs = ops.cast(2 * bit - 1, "float32")
        return self.project_out(signs) if self.projected else signs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bits": self.bits,
                "embedding_dim": self.embedding_dim,
                "entropy_weight": self.entropy_weight,
                "commitment_weight": self.commitment_weight,
                "diversity_weight": self.diversity_weight,
                "group_bits": self.group_bits,
                "temperature": self.temperature,
            }
        )
        return config
