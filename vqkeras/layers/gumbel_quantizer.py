import math

import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.quantizer import Quantizer


@keras.saving.register_keras_serializable(package="vqkeras")
class GumbelQuantizer(Quantizer):
    """Gumbel-softmax quantizer (DALL-E's dVAE): a relaxed categorical code.

    A Dense layer (a 1x1 convolution on an image grid) maps each latent
    vector to K logits. In training, the code is a Gumbel-softmax sample,

        y = softmax((logits + g) / temperature),   g = -log(-log(u)), u ~ U(0, 1)

    and the quantized vector is `y @ codebook`, a convex mixture of the K
    rows of a trainable (K, D) codebook that tends to one row as the
    temperature goes to 0. With `straight_through=True` the forward pass uses
    the one-hot vector of `argmax(y)` (so the decoder sees a codebook row,
    as at inference) and the backward pass the gradient of `y`. At inference
    the code is `argmax(logits)` and the quantized vector its codebook row.
    The indices are the argmax of the sample in training and of the logits
    at inference.

    The temperature is a non-trainable variable, `temperature`, set to the
    constructor's value at build: anneal it from 1 towards 1/16 during
    training with `vqkeras.callbacks.GumbelTemperatureSchedule` (or assign
    it yourself). Its current value is saved with the weights.

    The loss term `kl_loss = kl_weight * KL(q || uniform)`, with
    `q = softmax(logits)`, is `kl_weight * sum_k q_k log(K q_k)` per position,
    averaged over the sample's positions: the KL term of the dVAE's ELBO
    against a uniform prior, which keeps the logits from collapsing onto a
    few codes.

    The logits, the noise, the sample and the KL term are computed in
    float32 whatever the dtype policy.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector and of the inputs'
            last axis.
        temperature: the starting temperature, > 0.
        kl_weight: weight of the KL term (5e-4 as taming-transformers'
            Gumbel quantizer; DALL-E raises it from 0 to 6.6 over training,
            for a much larger K and a summed ELBO).
        straight_through: hard one-hot samples in the forward pass.
        seed: seed of the Gumbel noise.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step (a Gumbel-softmax
            sample) or not (the argmax of the logits).

    Returns:
        A dict with `"quantized"` (the input's shape), `"indices"` (int32,
        the input's shape without its last axis) and `"kl_loss"` (float32,
        shape `(B,)`).

    Example:

    >>> gumbel = GumbelQuantizer(num_embeddings=512, embedding_dim=64)
    >>> out = gumbel(keras.random.normal((8, 4, 4, 64)), training=True)
    >>> out["indices"].shape
    (8, 4, 4)

    Reference:
        Ramesh et al., "Zero-Shot Text-to-Image Generation" (DALL-E), 2021,
        section 2.1 and appendix A.2; Jang et al., "Categorical
        Reparameterization with Gumbel-Softmax", 2017; Maddison et al., "The
        Concrete Distribution", 2017.
    """

    loss_names = ("kl_loss",)

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        temperature=1.0,
        kl_weight=5e-4,
        straight_through=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(embedding_dim=embedding_dim, num_embeddings=num_embeddings, **kwargs)
        self.initial_temperature = validation.float_in_range(
            "temperature", temperature, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )
        self.kl_weight = validation.float_in_range(
            "kl_weight", kl_weight, 0.0, float("inf"), high_inclusive=False
        )
        self.straight_through = bool(straight_through)
        self.seed = seed
        # float32: the logits decide the codes.
        self.to_logits = keras.layers.Dense(self.num_embeddings, dtype="float32", name="to_logits")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        self.to_logits.build(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer="variance_scaling",
            dtype="float32",
            autocast=False,
        )
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
            dtype="float32",
            autocast=False,
        )

    def logits(self, inputs):
        """The float32 logits `(B, ..., K)` of the inputs."""
        self.check_inputs(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        return self.to_logits(ops.cast(inputs, "float32"))

    def call(self, inputs, training=None):
        logits = self.logits(inputs)
        codebook = ops.convert_to_tensor(self.embeddings)
        if training:
            # The Gumbel-max trick: argmax(logits + g) is a sample of
            # softmax(logits); the softmax of (logits + g) / temperature is
            # its relaxation (Jang et al. 2017, eq. 1).
            u = keras.random.uniform(ops.shape(logits), minval=1e-10, seed=self.seed_generator)
            noisy = logits - ops.log(-ops.log(u))
            sample = ops.softmax(noisy / self.temperature, axis=-1)
            indices = ops.cast(ops.argmax(noisy, axis=-1), "int32")
            if self.straight_through:
                hard = ops.one_hot(indices, self.num_embeddings, dtype="float32")
                sample = hard + sample - ops.stop_gradient(sample)
            quantized = ops.matmul(sample, codebook)
        else:
            indices = ops.cast(ops.argmax(logits, axis=-1), "int32")
            quantized = ops.take(codebook, indices, axis=0)
        # KL(q || uniform) = sum_k q_k (log q_k + log K), from the log-softmax
        # so that it stays finite where q_k underflows.
        log_q = ops.log_softmax(logits, axis=-1)
        kl = ops.sum(ops.exp(log_q) * (log_q + math.log(self.num_embeddings)), axis=-1)
        kl = ops.mean(ops.reshape(kl, (ops.shape(kl)[0], -1)), axis=1)
        return {
            "quantized": ops.cast(quantized, self.compute_dtype),
            "indices": indices,
            "kl_loss": self.kl_weight * kl,
        }

    def indices_to_codes(self, indices):
        """The codebook rows (float32) of integer `indices` of any shape."""
        if not self.built:
            raise ValueError(
                f"GumbelQuantizer '{self.name}' has no codebook yet: build it or call it on "
                "inputs before looking up indices."
            )
        validation.check_indices(indices, self.num_embeddings)
        return ops.take(ops.convert_to_tensor(self.embeddings), ops.cast(indices, "int32"), axis=0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "temperature": self.initial_temperature,
                "kl_weight": self.kl_weight,
                "straight_through": self.straight_through,
                "seed": self.seed,
            }
        )
        return config
