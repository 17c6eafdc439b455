import keras
from keras import ops

from vqkeras import distribution, validation
from vqkeras.layers.base_vector_quantizer import BaseVectorQuantizer
from vqkeras.layers.codebook_ops import sums_per_code


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

    `kmeans_init` refines that first-batch seeding with `kmeans_iterations`
    k-means iterations (it implies `init_from_first_batch`); the other
    options of `BaseVectorQuantizer` (factorized codes with `code_dim`,
    l2-normalised codes, the rotation trick) work as in `VectorQuantizer`.
    With `normalize_codes`, the moving averages follow the normalised
    vectors and the codebook is their normalised mean.

    Data-parallel training (`vqkeras.distribution.data_parallel`) updates
    every replica's copy of the codebook as one device would on the global
    batch: under a `tf.distribute` strategy the counts and sums are summed
    over the replicas and the random rows drawn from the global batch; under
    JAX's `DataParallel` the step sees the global batch already. The same
    holds for the k-means statistics of `kmeans_init`.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector.
        commitment_cost: commitment loss weight (the keyword `beta` still
            works, deprecated).
        decay: EMA decay in [0, 1).
        epsilon: Laplace smoothing constant, > 0.
        restart_after_steps: steps without use after which a code is re-seeded,
            or None for no restart.
        init_from_first_batch: seed the codebook from the first training batch.
        embeddings_initializer: initializer of the starting codebook.
        seed: seed for the random choices of restarts and initialisation.
        code_dim: C, the width of the codes; None (default) or D for no
            projections.
        normalize_codes: l2-normalise inputs and codes (cosine similarity).
        kmeans_init: initialise the codebook by k-means on the first
            training batch.
        kmeans_iterations: the number of Lloyd iterations of that k-means.
        gradient_estimator: "straight_through" (default) or "rotation".
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
        2019; Dhariwal et al., "Jukebox", 2020 (random restarts); Yu et al.,
        "Vector-quantized Image Modeling with Improved VQGAN", 2022
        (factorized and l2-normalised codes); Fifty et al., "Restructuring
        Vector Quantization with the Rotation Trick", 2024.
    """

    @validation.renamed_arguments(beta="commitment_cost")
    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=0.25,
        decay=0.99,
        epsilon=1e-5,
        restart_after_steps=None,
        init_from_first_batch=False,
        embeddings_initializer="variance_scaling",
        seed=None,
        **kwargs,
    ):
        super().__init__(
            num_embeddings, embedding_dim, commitment_cost=commitment_cost, seed=seed, **kwargs
        )
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
        if self.seed_generator is None:
            # Always there (restarts and seeding draw rows), as in the
            # layers saved before k-means existed.
            self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        super().build(input_shape)
        shape = (self.num_embeddings, self.code_size)
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
            initializer="zeros" if self.init_from_first_batch or self.kmeans_init else "ones",
            **state,
        )

    def _stored_codebook(self):
        total = ops.sum(self.cluster_size)
        smoothed = (
            (self.cluster_size + self.epsilon)
            / (total + self.num_embeddings * self.epsilon)
            * total
        )
        return self.embedding_sum / smoothed[:, None]

    def _codebook_for_step(self, flat, training):
        if not (training and (self.init_from_first_batch or self.kmeans_init)):
            return self.codebook
        # Seed from this batch once; written as a select so it compiles.
        fresh = self.initialized < 0.5
        seeds = self._first_batch_codes(flat, fresh)
        self.embedding_sum.assign(ops.where(fresh, seeds, self.embedding_sum.value))
        self.cluster_size.assign(ops.where(fresh, 1.0, self.cluster_size.value))
        self.initialized.assign(ops.ones(()))
        return self.codebook

    def _update_codebook(self, flat, flat_indices):
        counts = sums_per_code(
            ops.ones_like(flat_indices, dtype="float32"), flat_indices, self.num_embeddings
        )
        sums = sums_per_code(flat, flat_indices, self.num_embeddings)
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
            }
        )
        return config
