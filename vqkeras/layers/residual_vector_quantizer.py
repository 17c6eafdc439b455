import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.quantizer import Quantizer
from vqkeras.metrics import CodeUsageMetrics


@keras.saving.register_keras_serializable(package="vqkeras")
class ResidualVectorQuantizer(Quantizer):
    """Residual vector quantization: a stack of `depth` quantizers.

    Level 0 quantizes the input; level l quantizes the residual left by the
    levels before it, `r_l = z - (e_0 + ... + e_{l-1})`, by greedy nearest-code
    search. The quantized output is the sum of the `depth` codes, with the
    gradient passed straight through to the input. Each level uses a
    quantizer built from the configuration of `quantizer` (its weights are
    not copied), so the codebooks learn by gradients (`VectorQuantizer`) or
    by moving averages (`EMAVectorQuantizer`) as that quantizer does. With
    `shared_codebook=True` one quantizer serves every level (RQ-VAE);
    otherwise each level has its own (SoundStream).

    Every level's codebook starts from the same recipe, but the residuals
    shrink level by level: with gradient codebooks, a deep level's codes may
    start farther from its residuals than zero is, and then add error until
    they have learned. EMA codebooks with `init_from_first_batch=True` start
    at the scale of their own residuals (the choice of RQ-VAE).

    Loss terms have the names of the quantizer's (`commitment_loss` and, for
    `VectorQuantizer`, `codebook_loss`) and are summed over the levels. Level
    l's commitment loss is `commitment_cost * ||z - sg[e_0 + ... + e_l]||^2`,
    the loss of RQ-VAE (eq. 6), which sums the error of every partial sum.

    Quantize dropout (SoundStream, section 3.3), off by default: in training,
    each batch uses only its first n levels, n drawn uniformly from
    1..depth, so that any prefix of the codes decodes to a good
    reconstruction. The dropped levels still run on their residuals (so EMA
    codebooks keep following them and the indices keep their full depth),
    but they add nothing to the output or to the losses.

    Args:
        quantizer: a quantizer (a `vqkeras.layers.Quantizer` with one index
            per position, e.g. `VectorQuantizer` or `EMAVectorQuantizer`)
            whose configuration every level copies. If it has an integer `seed`,
            level l gets `seed + l`, so per-level random choices differ.
        depth: d, the number of levels.
        shared_codebook: one codebook for all levels instead of one per level.
        quantize_dropout: use a random number of levels per training batch.
        seed: seed of the quantize-dropout draws.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., D)`, D the quantizer's `embedding_dim`.
        training: whether the call is a training step (updates EMA codebooks,
            applies quantize dropout).

    Returns:
        A dict with `"quantized"` (the input's shape), `"indices"` (int32,
        the input shape with its last axis replaced by `depth`) and one
        per-sample loss vector of shape `(B,)` for each name in
        `loss_names`.

    Example:

    >>> rq = ResidualVectorQuantizer(EMAVectorQuantizer(256, 32), depth=4)
    >>> out = rq(keras.random.normal((8, 4, 4, 32)))
    >>> out["indices"].shape
    (8, 4, 4, 4)
    >>> coarse = rq.indices_to_codes(out["indices"], depth=2)  # sum of the first 2 codes

    Reference:
        Zeghidour et al., "SoundStream: An End-to-End Neural Audio Codec",
        2021; Lee et al., "Autoregressive Image Generation using Residual
        Quantization", 2022.
    """

    def __init__(
        self,
        quantizer,
        depth,
        shared_codebook=False,
        quantize_dropout=False,
        seed=None,
        **kwargs,
    ):
        if not isinstance(quantizer, Quantizer) or len(quantizer.index_shape((1, 1))) != 1:
            raise TypeError(
                "`quantizer` must be a vqkeras.layers.Quantizer with one index per position "
                f"(e.g. VectorQuantizer), to copy at each level. Received: quantizer={quantizer!r}"
            )
        super().__init__(
            embedding_dim=quantizer.embedding_dim, num_embeddings=quantizer.num_embeddings, **kwargs
        )
        self.depth = validation.positive_int("depth", depth)
        self.shared_codebook = bool(shared_codebook)
        self.quantize_dropout = bool(quantize_dropout)
        self.seed = seed
        # Only the configuration is kept: the levels are fresh layers, and the
        # template must not be tracked as a sublayer with weights of its own.
        self._quantizer_config = keras.saving.serialize_keras_object(quantizer)
        self.loss_names = tuple(quantizer.loss_names)
        config = quantizer.get_config()
        count = 1 if self.shared_codebook else self.depth
        self.quantizers = []
        for level in range(count):
            # float32 levels: codes rounded to bfloat16 would spoil the residuals.
            level_config = dict(config, name=f"level_{level}", dtype="float32")
            if isinstance(config.get("seed"), int):
                level_config["seed"] = config["seed"] + level
            self.quantizers.append(type(quantizer).from_config(level_config))
        if self.quantize_dropout:
            self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def level_quantizers(self):
        """The quantizer of each level, a list of length `depth`."""
        if self.shared_codebook:
            return self.quantizers * self.depth
        return list(self.quantizers)

    def build(self, input_shape):
        for quantizer in self.quantizers:
            if not quantizer.built:
                quantizer.build(input_shape)

    def _level_weights(self, training):
        """1.0 for the levels this call uses, 0.0 for those quantize dropout drops."""
        if not (training and self.quantize_dropout):
            return [1.0] * self.depth
        used = keras.random.randint((), 1, self.depth + 1, seed=self.seed_generator)
        return [ops.cast(ops.less(level, used), "float32") for level in range(self.depth)]

    def call(self, inputs, training=None):
        self.check_inputs(inputs)
        inputs = ops.cast(inputs, "float32")
        weights = self._level_weights(training)
        residual = inputs
        total = ops.zeros_like(inputs)
        indices = []
        losses = {name: 0.0 for name in self.loss_names}
        for quantizer, weight in zip(self.level_quantizers, weights):
            out = quantizer(residual, training=training)
            # The code's value; the level's own straight-through gradient is
            # not wanted here, the stack has one straight-through of its own.
            code = ops.stop_gradient(ops.cast(out["quantized"], "float32"))
            total = total + weight * code
            residual = residual - code
            indices.append(out["indices"])
            for name in self.loss_names:
                losses[name] = losses[name] + weight * out[name]
        straight_through = inputs + ops.stop_gradient(total - inputs)
        return {
            "quantized": ops.cast(straight_through, self.compute_dtype),
            "indices": ops.stack(indices, axis=-1),
            **losses,
        }

    def index_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.depth,)

    def code_metrics(self, prefix=""):
        return CodeUsageMetrics(self.num_embeddings, levels=self.depth, prefix=prefix)

    def indices_to_codes(self, indices, depth=None):
        """Sum of the codes of the first `depth` levels, float32 `(..., D)`.

        Args:
            indices: integer tensor `(..., k)` with 1 <= k <= `self.depth`:
                the codes of the first k levels (e.g. `inputs_to_indices`
                output, or a prefix of it).
            depth: how many of those levels to sum (coarse-to-fine), at most
                k; default all k.
        """
        if not self.built:
            raise ValueError(
                f"ResidualVectorQuantizer '{self.name}' has no codebooks yet: build it or call "
                "it on inputs before looking up indices."
            )
        shape = tuple(indices.shape)
        if len(shape) < 1 or shape[-1] is None or not 1 <= shape[-1] <= self.depth:
            raise ValueError(
                f"Expected indices of shape (..., k) with 1 <= k <= depth={self.depth}, one "
                f"code per level. Received shape={shape}."
            )
        levels = shape[-1]
        if depth is not None:
            depth = validation.positive_int("depth", depth)
            if depth > levels:
                raise ValueError(
                    f"`depth` must be at most the number of levels in the indices ({levels}). "
                    f"Received: depth={depth}"
                )
            levels = depth
        validation.check_indices(indices, self.num_embeddings)
        indices = ops.cast(indices, "int32")
        quantizers = self.level_quantizers
        total = quantizers[0].indices_to_codes(indices[..., 0])
        for level in range(1, levels):
            total = total + quantizers[level].indices_to_codes(indices[..., level])
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "quantizer": self._quantizer_config,
                "depth": self.depth,
                "shared_codebook": self.shared_codebook,
                "quantize_dropout": self.quantize_dropout,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["quantizer"] = keras.saving.deserialize_keras_object(config["quantizer"])
        return cls(**config)
