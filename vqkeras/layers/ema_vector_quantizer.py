import keras
from keras import ops

from vqkeras import distribution, validation
from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer


@keras.saving.register_keras_serializable(package="vqkeras")
class EMAVectorQuantizer(BaseVectorQuantizer):
    """Vector quantizer whose codebook follows exponential moving averages.

    In training, each code becomes the running mean of the encoder outputs
    assigned to it (VQ-VAE paper, appendix A.1):

        N_k <- decay * N_k + (1 - decay) * n_k           (cluster sizes)
        m_k <- decay * m_k + (1 - decay) * sum of z_e assigned to k
        e_k  = m_k / N~_k,  N~_k = (N_k + eps) / (sum N + K eps) * sum N

    where N~ is N with Laplace smoothing, so a code that stops being used does
    not divide by zero. The codebook is state, not a weight: it has no gradient
    and changes only when the layer is called with `training=True` (never in
    `evaluate` or `predict`). Only the commitment loss is returned.

    The state starts at N_k = 1 and m_k drawn from `embeddings_initializer`, so
    the initial codebook is exactly that draw.

    Two remedies against codebook collapse, both optional:
    - `init_from_first_batch`: the first training batch seeds the codebook with
      randomly chosen encoder outputs instead of the initializer's draw.
    - dead-code restart: a code unused for `restart_after_steps` consecutive
      training steps is re-seeded with a random encoder output of the current
      batch (as in Jukebox and SoundStream). `None` switches it off.

    Data-parallel training (`vqkeras.distribution.data_parallel`) updates
    every replica's copy of the codebook as one device would on the global
    batch: under a `tf.distribute` strategy the counts and sums are summed
    over the replicas and the random rows drawn from the global batch; under
    JAX's `DataParallel` the step sees the global batch already.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector.
        beta: commitment loss weight.
        decay: EMA decay in [0, 1).
        epsilon: Laplace smoothing constant, > 0.
        restart_after_steps: steps without use after which a code is re-seeded,
            or None for no restart.
        init_from_first_batch: seed the codebook from the first training batch.
        embeddings_initializer: initializer of the starting codebook.
        seed: seed for the random choices of restarts and initialisation.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: float tensor `(B, ..., D)`.
        training: whether the call is a training step (updates the codebook).

    Returns:
        A dict with `"quantized"`, `"indices"` (int32) and `"commitment_loss"`
        (float32, shape `(B,)`).

    Reference:
        van den Oord et al., "Neural Discrete Representation Learning", 2017;
        Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2",
        2019; Dhariwal et al., "Jukebox", 2020 (random restarts).
    """

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        beta=0.25,
        decay=0.99,
        epsilon=1e-5,
        restart_after_steps=None,
        init_from_first_batch=False,
        embeddings_initializer="variance_scaling",
        seed=None,
        **kwargs,
    ):
        super().__init__(num_embeddings, embedding_dim, beta=beta, **kwargs)
        self.decay = validation.float_in_range("decay", decay, 0.0, 1.0, high_inclusive=False)
        self.epsilon = validation.float_in_range(
            "epsilon", epsilon, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )
        if restart_after_steps is not None:
            restart_after_steps = validation.positive_int(
                "restart_after_steps", restart_after_steps
            )
        self.restart_after_steps = restart_after_steps
        self.init_from_first_batch = bool(init_from_first_batch)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        super().build(input_shape)
        shape = (self.num_embeddings, self.embedding_dim)
        state = dict(trainable=False, dtype="float32", autocast=False)
        self.cluster_size = self.add_weight(
            name="cluster_size", shape=shape[:1], initializer="ones", **state
        )
        self.embedding_sum = self.add_weight(
            name="embedding_sum", shape=shape, initializer=self.embeddings_initializer, **state
        )
        self.steps_unused = self.add_weight(
            name="steps_unused", shape=shape[:1], initializer="zeros", **state
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            initializer="zeros" if self.init_from_first_batch else "ones",
            **state,
        )

    @property
    def codebook(self):
        return self._codebook(self.cluster_size, self.embedding_sum)

    def _codebook(self, cluster_size, embedding_sum):
        total = ops.sum(cluster_size)
        smoothed = (
            (cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        )
        return embedding_sum / smoothed[:, None]

    def _random_rows(self, flat):
        """K rows of the global batch's `flat` drawn at random, with replacement.

        Under a `tf.distribute` strategy each replica holds a slice of the
        batch: all replicas draw the same global row numbers (their seed
        states stay equal), each fills in the rows it holds and the sum over
        replicas gives every replica the rows one device would have drawn.
        """
        local_size = ops.shape(flat)[0]
        offset, total = distribution.replica_offset(local_size)
        rows = keras.random.randint((self.num_embeddings,), 0, total, seed=self.seed_generator)
        rows = rows - offset
        held = ops.logical_and(rows >= 0, rows < local_size)
        picked = ops.take(flat, ops.clip(rows, 0, local_size - 1), axis=0)
        return distribution.cross_replica_sum(ops.where(held[:, None], picked, 0.0))

    def _codebook_for_step(self, flat, training):
        if not (training and self.trainable and self.init_from_first_batch):
            return self.codebook
        # Seed from this batch once; written as a select so it compiles.
        fresh = 1.0 - self.initialized
        self.embedding_sum.assign(
            fresh * ops.stop_gradient(self._random_rows(flat))
            + self.initialized * self.embedding_sum
        )
        self.cluster_size.assign(fresh + self.initialized * self.cluster_size)
        self.initialized.assign(ops.ones(()))
        return self.codebook

    def _update_codebook(self, flat, flat_indices):
        counts = ops.segment_sum(
            ops.ones_like(flat_indices, dtype="float32"), flat_indices, self.num_embeddings
        )
        sums = ops.segment_sum(flat, flat_indices, self.num_embeddings)
        # Under tf.distribute each replica sees a slice of the batch: sum the
        # statistics over replicas, so that every copy of the codebook takes
        # the same step, the one a single device takes on the whole batch.
        counts = distribution.cross_replica_sum(counts)
        sums = distribution.cross_replica_sum(sums)
        cluster_size = self.decay * self.cluster_size + (1.0 - self.decay) * counts
        embedding_sum = self.decay * self.embedding_sum + (1.0 - self.decay) * sums
        if self.restart_after_steps is not None:
            steps_unused = ops.where(counts > 0, 0.0, self.steps_unused + 1.0)
            dead = steps_unused >= self.restart_after_steps
            embedding_sum = ops.where(dead[:, None], self._random_rows(flat), embedding_sum)
            cluster_size = ops.where(dead, 1.0, cluster_size)
            self.steps_unused.assign(ops.where(dead, 0.0, steps_unused))
        self.cluster_size.assign(cluster_size)
        self.embedding_sum.assign(embedding_sum)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "decay": self.decay,
                "epsilon": self.epsilon,
                "restart_after_steps": self.restart_after_steps,
                "init_from_first_batch": self.init_from_first_batch,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "seed": self.seed,
            }
        )
        return config
