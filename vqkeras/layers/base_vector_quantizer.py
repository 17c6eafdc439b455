"""Shared machinery of the vector quantizers: nearest-code search, lookup,
the code space (projections, l2-normalised codes), k-means initialisation and
the gradient estimators. Subclasses decide how the codebook learns."""

import functools

import keras
from keras import ops

from vqkeras import distribution, validation
from vqkeras.layers.codebook_ops import nearest_code_indices, sums_per_code
from vqkeras.layers.quantizer import Quantizer

GRADIENT_ESTIMATORS = ("straight_through", "rotation")

# Floor of the norms divided by: l2 normalisation and the rotation trick.
NORM_EPSILON = 1e-6


def l2_normalize(x):
    """`x / ||x||` along the last axis, a zero vector staying zero."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return x / ops.maximum(norm, NORM_EPSILON)


def rotation_trick(z, q):
    """`q` in the forward pass; in the backward pass, the gradient of
    `sg[lambda R] z`, where R rotates z's direction onto q's and lambda =
    ||q|| / ||z|| rescales (Fifty et al. 2024):

        R = I - 2 r r^T + 2 q^ z^T,  z^ = z / ||z||, q^ = q / ||q||,
        r = (z^ + q^) / ||z^ + q^||

    so that lambda R z = q. R is applied through two dot products per
    vector, never formed as a matrix. `q` must carry no gradient (a code
    lookup).
    """
    z_norm = ops.maximum(ops.sqrt(ops.sum(ops.square(z), axis=-1, keepdims=True)), NORM_EPSILON)
    q_norm = ops.sqrt(ops.sum(ops.square(q), axis=-1, keepdims=True))
    z_hat = ops.stop_gradient(z / z_norm)
    q_hat = q / ops.maximum(q_norm, NORM_EPSILON)
    # z^ = -q^ leaves r = 0 and R = I + 2 q^ z^T, which still maps z^ to q^.
    r = ops.stop_gradient(l2_normalize(z_hat + q_hat))
    scale = ops.stop_gradient(q_norm / z_norm)
    rotated = scale * (
        z
        - 2.0 * r * ops.sum(r * z, axis=-1, keepdims=True)
        + 2.0 * q_hat * ops.sum(z_hat * z, axis=-1, keepdims=True)
    )
    # rotated - sg[rotated] is exactly 0: the value is q to the last bit.
    return q + (rotated - ops.stop_gradient(rotated))


class BaseVectorQuantizer(Quantizer):
    """Maps each D-dimensional vector of the input to its nearest codebook entry.

    Subclasses provide the stored codebook (`_stored_codebook`) and may change
    it in training (`_codebook_for_step`, `_update_codebook`). Distances,
    k-means and loss terms are computed in float32 whatever the dtype policy:
    in bfloat16, close codes are confused.

    The search runs in the code space, of width C: the inputs themselves
    (C = D) by default. The options, all off by default (the defaults create
    the same variables as before the options existed, so saved weights load):

    - `code_dim` (ViT-VQGAN's factorized codes): when set and not D, a Dense
      layer projects the inputs to C = `code_dim` channels before the search
      and another projects the codes back to D; the quantized output and
      `indices_to_codes` are the projected-back vectors, what a decoder sees.
      ViT-VQGAN reports that a low C (32 or 8) raises codebook usage.
    - `normalize_codes` (ViT-VQGAN, LlamaGen): the projected inputs and the
      codebook are l2-normalised before the search, so the nearest code is
      the one of largest cosine similarity, and the codes returned are the
      normalised ones.
    - `kmeans_init` (lucidrains' vector-quantize-pytorch, SoundStream): the
      first training call sets the codebook to the centres of
      `kmeans_iterations` k-means (Lloyd) iterations on the batch's vectors
      in the code space, started from K of them drawn at random (spherical
      k-means with `normalize_codes`). Under data-parallel training the
      counts and sums of each iteration are summed over the replicas, so
      every replica gets the centres of the global batch.

    The gradient reaching the inputs through the quantized output is chosen
    by `gradient_estimator`: "straight_through" (the identity, van den Oord
    et al. 2017) or "rotation" (Fifty et al. 2024: the gradient goes through
    the rotation and rescaling that maps the vector onto its code, held
    constant, so that its angle to the code shapes the update). Both give
    the code itself as the forward value.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the last axis of the inputs.
        commitment_cost: weight of the commitment loss,
            `commitment_cost * ||z_e - sg[e]||^2` (beta in the VQ-VAE paper; the
            keyword `beta` still works, deprecated).
        code_dim: C, the width of the codes; None (default) or D for no
            projections.
        normalize_codes: l2-normalise inputs and codes (cosine similarity).
        kmeans_init: initialise the codebook by k-means on the first
            training batch.
        kmeans_iterations: the number of Lloyd iterations of that k-means.
        gradient_estimator: "straight_through" or "rotation".
        seed: seed of the random draws (k-means' starting centres).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(..., D)` with at least one leading axis,
            the batch, e.g. `(B, H, W, D)`, `(B, T, D)` or `(B, D)`.
        training: whether the call is a training step.

    Returns:
        A dict with `"quantized"` (same shape as the inputs, equal to the code
        of each vector; its gradient is `gradient_estimator`'s), `"indices"`
        (int32, the input shape without its last axis) and one per-sample loss
        vector of shape `(B,)` for each name in `loss_names`, computed in the
        code space.
    """

    # Names of the per-sample loss terms that `call` returns.
    loss_names = ("commitment_loss",)

    @validation.renamed_arguments(beta="commitment_cost")
    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=0.25,
        code_dim=None,
        normalize_codes=False,
        kmeans_init=False,
        kmeans_iterations=10,
        gradient_estimator="straight_through",
        seed=None,
        **kwargs,
    ):
        super().__init__(embedding_dim=embedding_dim, num_embeddings=num_embeddings, **kwargs)
        self.commitment_cost = validation.float_in_range(
            "commitment_cost", commitment_cost, 0.0, float("inf"), high_inclusive=False
        )
        if code_dim is not None:
            code_dim = validation.positive_int("code_dim", code_dim)
        self.code_dim = code_dim
        self.normalize_codes = bool(normalize_codes)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = validation.positive_int("kmeans_iterations", kmeans_iterations)
        if gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(
                f"`gradient_estimator` must be one of {GRADIENT_ESTIMATORS}. "
                f"Received: gradient_estimator={gradient_estimator!r}"
            )
        self.gradient_estimator = gradient_estimator
        self.seed = seed
        # Created only when used: a seed generator's state is a variable.
        self.seed_generator = keras.random.SeedGenerator(seed) if self.kmeans_init else None
        self.projected = code_dim is not None and code_dim != self.embedding_dim
        if self.projected:
            # float32 like the search: the projections decide the codes.
            self.project_in = keras.layers.Dense(code_dim, dtype="float32", name="project_in")
            self.project_out = keras.layers.Dense(
                self.embedding_dim, dtype="float32", name="project_out"
            )

    @property
    def code_size(self):
        """C, the width of the codes: `code_dim`, or D when it is None."""
        return self.code_dim or self.embedding_dim

    @property
    def codebook(self):
        """The (K, C) float32 codes that the search compares with:
        l2-normalised with `normalize_codes`, before any projection out."""
        codebook = self._stored_codebook()
        return l2_normalize(codebook) if self.normalize_codes else codebook

    def _stored_codebook(self):
        """The (K, C) float32 codebook as the layer's state holds it."""
        raise NotImplementedError

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        if self.projected:
            self.project_in.build(input_shape)
            self.project_out.build((*tuple(input_shape)[:-1], self.code_size))

    def _to_code_space(self, inputs):
        """The float32 input vectors `(N, C)` that the search compares."""
        flat = ops.reshape(ops.cast(inputs, "float32"), (-1, self.embedding_dim))
        if self.projected:
            flat = self.project_in(flat)
        return l2_normalize(flat) if self.normalize_codes else flat

    def nearest_indices(self, inputs):
        """Index of the nearest code (squared L2, in the code space) for every
        input vector."""
        self.check_inputs(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        indices = nearest_code_indices(self._to_code_space(inputs), self.codebook)
        return ops.reshape(indices, ops.shape(inputs)[:-1])

    def inputs_to_indices(self, inputs):
        return self.nearest_indices(inputs)

    def indices_to_codes(self, indices):
        """The code vectors (float32, `(..., D)`, projected back to D when
        the layer projects) of integer `indices` of any shape."""
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no codebook yet: build it or call "
                "it on inputs before looking up indices."
            )
        validation.check_indices(indices, self.num_embeddings)
        codes = ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)
        return self.project_out(codes) if self.projected else codes

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

    def _kmeans(self, flat, centres, active):
        """Lloyd's k-means on `flat` `(N, C)` from `centres` `(K, C)`; a centre
        left without vectors stays where it was. Spherical (centres
        renormalised) with `normalize_codes`.

        The searches run only while `active` (a scalar bool; otherwise the
        centres come back unchanged). Each iteration's counts and sums are of
        the global batch: summed over `tf.distribute` replicas, outside the
        condition, since replicas cannot synchronise inside one.
        """
        # Sums of the assigned vectors and, in the last column, their counts:
        # one segment sum and one all-reduce per iteration.
        counted = ops.concatenate([flat, ops.ones_like(flat[:, :1])], axis=1)
        nothing = ops.zeros((self.num_embeddings, self.code_size + 1), dtype="float32")

        def statistics(centres):
            return sums_per_code(counted, nearest_code_indices(flat, centres), self.num_embeddings)

        for _ in range(self.kmeans_iterations):
            stats = ops.cond(active, functools.partial(statistics, centres), lambda: nothing)
            stats = distribution.cross_replica_sum(stats)
            sums, counts = stats[:, :-1], stats[:, -1:]
            means = sums / ops.maximum(counts, 1.0)
            if self.normalize_codes:
                means = l2_normalize(means)
            centres = ops.where(counts > 0, means, centres)
        return centres

    def _first_batch_codes(self, flat, fresh):
        """The (K, C) codes to initialise the codebook with on this batch:
        random rows of it, refined by k-means when `kmeans_init`; the
        iterations run only while `fresh` (a scalar bool) is true. The random
        draw stays outside any condition: a seed generator's update inside a
        JAX `cond` branch would leak out of it."""
        rows = ops.stop_gradient(self._random_rows(flat))
        if not self.kmeans_init:
            return rows
        return self._kmeans(flat, rows, fresh)

    def _codebook_for_step(self, flat, training):
        """The codebook to quantize this batch with (a hook for initialisation)."""
        return self.codebook

    def _update_codebook(self, flat, flat_indices):
        """Non-gradient codebook update in training; nothing by default."""

    def _loss_terms(self, inputs, quantized, axes):
        """Per-sample loss terms, in the code space; `quantized` is the raw
        code lookup."""
        commitment = ops.mean(ops.square(inputs - ops.stop_gradient(quantized)), axis=axes)
        return {"commitment_loss": self.commitment_cost * commitment}

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        flat = self._to_code_space(inputs)
        update = bool(training and self.trainable)
        codebook = self._codebook_for_step(ops.stop_gradient(flat), update)
        flat_indices = nearest_code_indices(flat, codebook)
        code_shape = (*ops.shape(inputs)[:-1], self.code_size)
        z = ops.reshape(flat, code_shape)
        codes = ops.reshape(ops.take(codebook, flat_indices, axis=0), code_shape)
        losses = self._loss_terms(z, codes, axes=tuple(range(1, len(inputs.shape))))
        if update:
            self._update_codebook(ops.stop_gradient(flat), flat_indices)
        codes = ops.stop_gradient(codes)
        if self.gradient_estimator == "rotation":
            quantized = rotation_trick(z, codes)
        else:
            # Straight-through estimator (van den Oord et al. 2017, eq. 3 and
            # the text after it): forward pass uses the code, backward pass
            # copies the gradient to the encoder output unchanged.
            quantized = codes + (z - ops.stop_gradient(z))
        if self.projected:
            quantized = self.project_out(quantized)
        return {
            "quantized": ops.cast(quantized, self.compute_dtype),
            "indices": ops.reshape(flat_indices, ops.shape(inputs)[:-1]),
            **losses,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "commitment_cost": self.commitment_cost,
                "code_dim": self.code_dim,
                "normalize_codes": self.normalize_codes,
                "kmeans_init": self.kmeans_init,
                "kmeans_iterations": self.kmeans_iterations,
                "gradient_estimator": self.gradient_estimator,
                "seed": self.seed,
            }
        )
        return config
