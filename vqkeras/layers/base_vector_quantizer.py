"""Shared machinery of the vector quantizers: nearest-code search, lookup and
the straight-through estimator. Subclasses decide how the codebook learns."""

from keras import ops

from vqkeras import validation
from vqkeras.layers.quantizer import Quantizer


class BaseVectorQuantizer(Quantizer):
    """Maps each D-dimensional vector of the input to its nearest codebook entry.

    Subclasses provide the codebook (the `codebook` property) and may update it
    in training (`_update_codebook`). Distances and loss terms are computed in
    float32 whatever the dtype policy: in bfloat16, close codes are confused.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector; the last axis of the
            inputs.
        beta: weight of the commitment loss, `beta * ||z_e - sg[e]||^2`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(..., D)` with at least one leading axis,
            the batch, e.g. `(B, H, W, D)`, `(B, T, D)` or `(B, D)`.
        training: whether the call is a training step.

    Returns:
        A dict with `"quantized"` (same shape as the inputs; its gradient flows
        straight through to the inputs), `"indices"` (int32, the input shape
        without its last axis) and one per-sample loss vector of shape `(B,)`
        for each name in `loss_names`.
    """

    # Names of the per-sample loss terms that `call` returns.
    loss_names = ("commitment_loss",)

    def __init__(self, num_embeddings, embedding_dim, beta=0.25, **kwargs):
        super().__init__(embedding_dim=embedding_dim, num_embeddings=num_embeddings, **kwargs)
        self.beta = validation.float_in_range("beta", beta, 0.0, float("inf"), high_inclusive=False)

    @property
    def codebook(self):
        """The (K, D) float32 codebook."""
        raise NotImplementedError

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def nearest_indices(self, inputs):
        """Index of the nearest code (squared L2) for every input vector."""
        self.check_inputs(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        flat = ops.reshape(ops.cast(inputs, "float32"), (-1, self.embedding_dim))
        indices = self._nearest(flat, self.codebook)
        return ops.reshape(indices, ops.shape(inputs)[:-1])

    def inputs_to_indices(self, inputs):
        return self.nearest_indices(inputs)

    def indices_to_codes(self, indices):
        """The code vectors (float32) of integer `indices` of any shape."""
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no codebook yet: build it or call "
                "it on inputs before looking up indices."
            )
        validation.check_indices(indices, self.num_embeddings)
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    @staticmethod
    def _nearest(flat, codebook):
        # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2, one matmul for all pairs.
        flat = ops.stop_gradient(flat)
        codebook = ops.stop_gradient(codebook)
        distances = (
            ops.sum(ops.square(flat), axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(codebook))
            + ops.sum(ops.square(codebook), axis=1)
        )
        return ops.cast(ops.argmin(distances, axis=1), "int32")

    def _codebook_for_step(self, flat, training):
        """The codebook to quantize this batch with (a hook for initialisation)."""
        return self.codebook

    def _update_codebook(self, flat, flat_indices):
        """Non-gradient codebook update in training; nothing by default."""

    def _loss_terms(self, inputs, quantized, axes):
        """Per-sample loss terms; `quantized` is the raw code lookup."""
        commitment = ops.mean(ops.square(inputs - ops.stop_gradient(quantized)), axis=axes)
        return {"commitment_loss": self.beta * commitment}

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        inputs = ops.cast(inputs, "float32")
        flat = ops.reshape(inputs, (-1, self.embedding_dim))
        codebook = self._codebook_for_step(flat, training)
        flat_indices = self._nearest(flat, codebook)
        quantized = ops.reshape(ops.take(codebook, flat_indices, axis=0), ops.shape(inputs))
        losses = self._loss_terms(inputs, quantized, axes=tuple(range(1, len(inputs.shape))))
        if training and self.trainable:
            self._update_codebook(ops.stop_gradient(flat), flat_indices)
        # Straight-through estimator (van den Oord et al. 2017, eq. 3 and the
        # text after it): forward pass uses the code, backward pass copies the
        # gradient to the encoder output unchanged.
        straight_through = inputs + ops.stop_gradient(quantized - inputs)
        return {
            "quantized": ops.cast(straight_through, self.compute_dtype),
            "indices": ops.reshape(flat_indices, ops.shape(inputs)[:-1]),
            **losses,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "beta": self.beta,
            }
        )
        return config
