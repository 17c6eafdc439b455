"""The contract between a quantizer and the model families."""

import keras

from vqkeras import validation
from vqkeras.metrics import CodeUsageMetrics


class Quantizer(keras.layers.Layer):
    """Base class of the quantizers: what every discrete family relies on.

    A quantizer maps latent vectors `(B, ..., D)` to quantized vectors of the
    same shape, integer indices and per-sample loss terms. The families
    (`VQVAE`, `RQVAE`, `VQVAE2`) use nothing else, so any subclass serves
    any of them. Distances, rounding and loss terms are decided in float32
    whatever the dtype policy: in bfloat16, close codes are confused.

    A subclass sets `embedding_dim` and `num_embeddings` in `__init__` (via
    `super().__init__`), names its loss terms in `loss_names`, and implements
    `call` and `indices_to_codes`. It may override `inputs_to_indices` with
    a faster path, `index_shape` for indices with a trailing axis of their
    own (a residual stack's levels) and `code_metrics` for per-level metrics.

    Args:
        embedding_dim: D, the last axis of the inputs.
        num_embeddings: K, the number of distinct codes each index takes
            (a codebook's size, or the product of a scalar quantizer's
            levels).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step.

    Returns:
        A dict with `"quantized"` (the input's shape, in the compute dtype,
        with the gradient the method defines), `"indices"` (int32, of
        `index_shape(inputs.shape)`) and one per-sample loss vector of
        shape `(B,)` for each name in `loss_names`.
    """

    # Names of the per-sample loss terms that `call` returns.
    loss_names = ()

    def __init__(self, embedding_dim, num_embeddings, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        self.num_embeddings = validation.positive_int("num_embeddings", num_embeddings)

    @property
    def input_dtype(self):
        # Keep float32 inputs float32 under a mixed policy: decisions need it.
        return "float32"

    def index_shape(self, input_shape):
        """The shape of the indices for inputs of `input_shape`."""
        return tuple(input_shape)[:-1]

    def inputs_to_indices(self, inputs):
        """Int32 indices of `inputs` `(B, ..., D)`, as an inference call gives them."""
        return self(inputs, training=False)["indices"]

    def indices_to_codes(self, indices):
        """The float32 vectors `(..., D)` of integer `indices`: what the
        decoder sees for them (before the cast to the compute dtype)."""
        raise NotImplementedError

    def code_metrics(self, prefix=""):
        """Perplexity and usage metrics of this quantizer's indices, named
        with `prefix` (e.g. "top_"), to be updated with `call`'s indices."""
        return CodeUsageMetrics(self.num_embeddings, prefix=prefix)

    def check_inputs(self, inputs):
        """Raises unless `inputs` are floats `(B, ..., D)`."""
        dtype = validation.dtype_of(inputs)
        if "float" not in dtype:
            raise TypeError(
                f"{type(self).__name__} '{self.name}' expects float inputs. Received dtype={dtype}."
            )
        self.check_input_shape(inputs.shape)

    def check_input_shape(self, shape):
        shape = tuple(shape)
        if len(shape) < 2 or shape[-1] != self.embedding_dim:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of shape "
                f"(batch, ..., {self.embedding_dim}). Received shape={shape}."
            )

    def compute_output_spec(self, inputs, training=None):
        shape = tuple(inputs.shape)
        return {
            "quantized": keras.KerasTensor(shape, dtype=self.compute_dtype),
            "indices": keras.KerasTensor(self.index_shape(shape), dtype="int32"),
            **{name: keras.KerasTensor(shape[:1], dtype="float32") for name in self.loss_names},
        }
