import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer


@keras.saving.register_keras_serializable(package="vqkeras")
class VectorQuantizer(BaseVectorQuantizer):
    """Vector quantizer whose codebook is learned by gradient descent.

    The codebook moves towards the encoder outputs through the codebook loss
    `||sg[z_e] - e||^2`; the encoder commits to its codes through the
    commitment loss `commitment_cost * ||z_e - sg[e]||^2` (VQ-VAE paper, eq. 3,
    where it is beta). Both are returned per sample, averaged over every
    non-batch axis.

    The options of `BaseVectorQuantizer`, all off by default: factorized
    codes (`code_dim`, projections in and out), l2-normalised codes
    (`normalize_codes`), k-means initialisation on the first training batch
    (`kmeans_init`) and the rotation trick (`gradient_estimator="rotation"`).
    With `kmeans_init`, the layer holds `initialized` and `embeddings_offset`
    as state and its codebook is `embeddings + embeddings_offset`: a training
    step cannot assign a trainable weight on JAX (the step returns only the
    non-trainable state), so the k-means centres are reached by setting the
    offset to `centres - embeddings`, after which the gradient moves the
    codebook exactly as it moves `embeddings`.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the inputs' last axis (and the codes' width unless
            `code_dim` is set).
        commitment_cost: commitment loss weight (beta, 0.25 in the paper; the
            keyword `beta` still works, deprecated).
        embeddings_initializer: initializer of the (K, C) codebook.
        code_dim: C, the width of the codes; None (default) or D for no
            projections.
        normalize_codes: l2-normalise inputs and codes (cosine similarity).
        kmeans_init: initialise the codebook by k-means on the first
            training batch.
        kmeans_iterations: the number of Lloyd iterations of that k-means.
        gradient_estimator: "straight_through" (default) or "rotation".
        seed: seed of the random draws (k-means' starting centres).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step.

    Returns:
        A dict with `"quantized"`, `"indices"` (int32), `"codebook_loss"` and
        `"commitment_loss"` (both float32, shape `(B,)`).

    Example:

    >>> vq = VectorQuantizer(num_embeddings=512, embedding_dim=64)
    >>> out = vq(keras.random.normal((8, 4, 4, 64)))
    >>> out["indices"].shape
    (8, 4, 4)
    >>> # ViT-VQGAN's factorized, l2-normalised codes, learned from k-means.
    >>> vq = VectorQuantizer(8192, 256, code_dim=32, normalize_codes=True, kmeans_init=True)

    Reference:
        van den Oord et al., "Neural Discrete Representation Learning", 2017;
        Yu et al., "Vector-quantized Image Modeling with Improved VQGAN",
        2022 (factorized and l2-normalised codes); Fifty et al.,
        "Restructuring Vector Quantization with the Rotation Trick", 2024.
    """

    loss_names = ("codebook_loss", "commitment_loss")

    @validation.renamed_arguments(beta="commitment_cost")
    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=0.25,
        embeddings_initializer="variance_scaling",
        **kwargs,
    ):
        super().__init__(num_embeddings, embedding_dim, commitment_cost=commitment_cost, **kwargs)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_embeddings, self.code_size),
            initializer=self.embeddings_initializer,
            dtype="float32",
            autocast=False,
        )
        if self.kmeans_init:
            state = dict(trainable=False, dtype="float32", autocast=False)
            self.initialized = self.add_weight(
                name="initialized", shape=(), initializer="zeros", **state
            )
            self.embeddings_offset = self.add_weight(
                name="embeddings_offset",
                shape=(self.num_embeddings, self.code_size),
                initializer="zeros",
                **state,
            )

    def _stored_codebook(self):
        embeddings = ops.convert_to_tensor(self.embeddings)
        if self.kmeans_init:
            return embeddings + self.embeddings_offset.value
        return embeddings

    def _codebook_for_step(self, flat, training):
        if training and self.kmeans_init:
            fresh = self.initialized < 0.5
            centres = self._first_batch_codes(flat, fresh)
            offset = centres - ops.stop_gradient(self.embeddings.value)
            self.embeddings_offset.assign(ops.where(fresh, offset, self.embeddings_offset.value))
            self.initialized.assign(ops.ones(()))
        return self.codebook

    def _loss_terms(self, inputs, quantized, axes):
        terms = super()._loss_terms(inputs, quantized, axes)
        codebook_loss = ops.mean(ops.square(ops.stop_gradient(inputs) - quantized), axis=axes)
        return {"codebook_loss": codebook_loss, **terms}

    def get_config(self):
        config = super().get_config()
        config["embeddings_initializer"] = keras.initializers.serialize(self.embeddings_initializer)
        return config
