import keras
from keras import ops

from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer


@keras.saving.register_keras_serializable(package="vqkeras")
class VectorQuantizer(BaseVectorQuantizer):
    """Vector quantizer whose codebook is learned by gradient descent.

    The codebook moves towards the encoder outputs through the codebook loss
    `||sg[z_e] - e||^2`; the encoder commits to its codes through the
    commitment loss `beta * ||z_e - sg[e]||^2` (VQ-VAE paper, eq. 3). Both are
    returned per sample, averaged over every non-batch axis.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector.
        beta: commitment loss weight (0.25 in the paper).
        embeddings_initializer: initializer of the (K, D) codebook.
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

    Reference:
        van den Oord et al., "Neural Discrete Representation Learning", 2017.
    """

    loss_names = ("codebook_loss", "commitment_loss")

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        beta=0.25,
        embeddings_initializer="variance_scaling",
        **kwargs,
    ):
        super().__init__(num_embeddings, embedding_dim, beta=beta, **kwargs)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=self.embeddings_initializer,
            dtype="float32",
            autocast=False,
        )

    @property
    def codebook(self):
        return ops.convert_to_tensor(self.embeddings)

    def _loss_terms(self, inputs, quantized, axes):
        terms = super()._loss_terms(inputs, quantized, axes)
        codebook_loss = ops.mean(ops.square(ops.stop_gradient(inputs) - quantized), axis=axes)
        return {"codebook_loss": codebook_loss, **terms}

    def get_config(self):
        config = super().get_config()
        config["embeddings_initializer"] = keras.initializers.serialize(self.embeddings_initializer)
        return config
