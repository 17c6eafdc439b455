import numbers

import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.layers.quantizer import Quantizer

# The largest number of codes whose indices fit in int32.
MAX_CODES = 2**31 - 1


def check_levels(levels):
    """Returns `levels` as a tuple of ints >= 2, or raises a clear error."""
    try:
        levels = tuple(levels)
    except TypeError:
        raise ValueError(
            f"`levels` must be a sequence of integers >= 2. Received: levels={levels!r}"
        ) from None
    if not levels:
        raise ValueError("`levels` must name at least one channel's levels. Received: levels=()")
    if any(
        isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 2
        for level in levels
    ):
        raise ValueError(f"Every level must be an integer >= 2. Received: levels={levels!r}")
    levels = tuple(int(level) for level in levels)
    if np.prod(levels, dtype=np.float64) > MAX_CODES:
        raise ValueError(
            f"The levels give {np.prod(levels, dtype=np.float64):.0f} codes; indices are int32, "
            f"so at most {MAX_CODES} are possible. Received: levels={levels!r}"
        )
    return levels


@keras.saving.register_keras_serializable(package="vqkeras")
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization (FSQ): each channel rounded to a few levels.

    Channel i of the latent is bounded to L_i values by a scaled tanh and
    rounded to the nearest one, with a straight-through gradient; the codes
    are the grid of those values scaled to [-1, 1]. There is no codebook to
    learn and no loss term: the grid is fixed and every point of it is a
    code, so codebook collapse cannot happen.

        half_l  = (L - 1) * (1 - 1e-3) / 2
        offset  = 0.5 for even L, 0 for odd L
        shift   = tan(offset / half_l)
        bounded = half_l * tanh(z + shift) - offset    in (-L/2, L/2)
        code    = round_ste(bounded) / (L // 2)         in [-1, 1]

    An odd L gives the levels {-(L-1)/2, ..., (L-1)/2}, an even L the
    half-integer-shifted {-L/2, ..., L/2 - 1}; `shift` moves z = 0 to
    (about) level 0 in both cases. The index of a position is the mixed-radix number
    whose digits are the channels' levels, channel 0 the least significant:
    `index = sum_i (round(bounded_i) + L_i // 2) * prod_{j < i} L_j`, so
    there are `num_embeddings = prod(levels)` codes.

    When the inputs' width D (`embedding_dim`) differs from `len(levels)`,
    a Dense layer projects the inputs to `len(levels)` channels before
    quantization and another projects the codes back to D; the quantized
    output and `indices_to_codes` then give the projected-back vectors, what
    a decoder sees. Both run in float32, as does the rounding.

    Args:
        levels: L_i, the number of levels of each channel, integers >= 2.
            The paper recommends e.g. (8, 6, 5) for about 2^8 codes,
            (8, 5, 5, 5) for 2^10, (7, 5, 5, 5, 5) for 2^12.
        embedding_dim: D, the inputs' last axis (default: `len(levels)`,
            no projections).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step (no effect: FSQ has
            no state).

    Returns:
        A dict with `"quantized"` (the input's shape; its gradient is the
        tanh bound's derivative, passed straight through the rounding) and
        `"indices"` (int32, the input's shape without its last axis). No
        loss terms.

    Example:

    >>> fsq = FiniteScalarQuantizer(levels=(8, 5, 5, 5))
    >>> out = fsq(keras.random.normal((8, 4, 4, 4)))
    >>> out["indices"].shape, fsq.num_embeddings
    ((8, 4, 4), 1000)

    Reference:
        Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple",
        2023 (section 3 and the code of appendix A).
    """

    def __init__(self, levels=(8, 5, 5, 5), embedding_dim=None, **kwargs):
        levels = check_levels(levels)
        if embedding_dim is None:
            embedding_dim = len(levels)
        super().__init__(embedding_dim=embedding_dim, num_embeddings=int(np.prod(levels)), **kwargs)
        self.levels = levels
        self.projected = self.embedding_dim != len(levels)
        if self.projected:
            # float32 like the rounding: the projections decide the codes.
            self.project_in = keras.layers.Dense(len(levels), dtype="float32", name="project_in")
            self.project_out = keras.layers.Dense(
                self.embedding_dim, dtype="float32", name="project_out"
            )
        # The constants of the bound (appendix A's `bound`, eps = 1e-3).
        sizes = np.asarray(levels, dtype="float32")
        self._half_l = (sizes - 1.0) * (1.0 - 1e-3) / 2.0
        self._offset = np.where(sizes % 2 == 0, 0.5, 0.0).astype("float32")
        # As the reference code: tan, not atanh. atanh(offset / half_l) would
        # make z = 0 land exactly on level 0, but is NaN for L = 2, where
        # offset / half_l = 1 / (1 - 1e-3) > 1. With tan, z = 0 lands 4e-4
        # below level 0 for L = 4 and 0.04 below it for L = 2.
        self._shift = np.tan(self._offset / self._half_l).astype("float32")
        self._half_width = np.floor(sizes / 2.0).astype("float32")
        # Mixed-radix place values: channel 0 is the least significant digit.
        self._radix = np.asarray(levels, dtype="int32")
        self._basis = np.cumprod((1, *levels[:-1])).astype("int32")

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        if self.projected:
            self.project_in.build(input_shape)
            self.project_out.build((*tuple(input_shape)[:-1], len(self.levels)))

    def bound(self, z):
        """`half_l * tanh(z + shift) - offset`: each channel in (-L/2, L/2)."""
        shift, half_l, offset = map(
            ops.convert_to_tensor, (self._shift, self._half_l, self._offset)
        )
        return ops.tanh(z + shift) * half_l - offset

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        z = ops.cast(inputs, "float32")
        if self.projected:
            z = self.project_in(z)
        bounded = self.bound(z)
        rounded = ops.round(bounded)
        half_width = ops.convert_to_tensor(self._half_width)
        # Straight-through rounding (section 3): the forward pass rounds,
        # the backward pass takes the gradient of `bounded`.
        codes = (bounded + ops.stop_gradient(rounded - bounded)) / half_width
        digits = ops.cast(rounded + half_width, "int32")
        basis = ops.convert_to_tensor(self._basis)
        indices = ops.cast(ops.sum(digits * basis, axis=-1), "int32")
        quantized = self.project_out(codes) if self.projected else codes
        return {"quantized": ops.cast(quantized, self.compute_dtype), "indices": indices}

    def indices_to_codes(self, indices):
        """The float32 vectors `(..., D)` of integer `indices`: the grid
        points in [-1, 1], projected back to D if the layer projects."""
        validation.check_indices(indices, self.num_embeddings)
        if self.projected and not self.built:
            raise ValueError(
                f"FiniteScalarQuantizer '{self.name}' has no projections yet: build it or call "
                "it on inputs before looking up indices."
            )
        indices = ops.expand_dims(ops.cast(indices, "int32"), -1)
        basis, levels, half_width = map(
            ops.convert_to_tensor, (self._basis, self._radix, self._half_width)
        )
        digits = ops.mod(ops.floor_divide(indices, basis), levels)
        codes = (ops.cast(digits, "float32") - half_width) / half_width
        return self.project_out(codes) if self.projected else codes

    def get_config(self):
        config = super().get_config()
        config.update({"levels": self.levels, "embedding_dim": self.embedding_dim})
        return config
