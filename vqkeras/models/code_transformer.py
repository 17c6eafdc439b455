import math

import keras
import numpy as np
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.transformer_block import TransformerBlock
from vqkeras.models.loss_terms_model import LossTermsModel


class CodeTransformer(LossTermsModel):
    """Base of the Transformer priors over raster-flattened code grids.

    Holds what `TransformerPrior` (autoregressive) and `MaskGITPrior`
    (masked, bidirectional) share: the constructor arguments and their
    checks, the token, class ("start") and positional embeddings, the
    `TransformerBlock`s (causal or not, per `causal`), the head, the input
    checks, `fit`/`evaluate`/`predict` wrappers, `for_grid`/`fits`, the
    sampling-argument checks, the tempered top-k/top-p draw and the compiled
    sampler. Subclasses set `causal`, `extra_tokens` and `sequence_length`,
    and implement `_logits`, `compute_losses` and `sample`.

    The class token: a class-conditional prior learns one embedding per
    class plus a "null class" (index `num_classes`); in training each label
    is replaced by the null class with probability `label_dropout`, so the
    network also learns the unconditional distribution (for classifier-free
    guidance). An unconditional prior has one class embedding.

    Plain grids only: stacked codes (`depth`) and condition grids are for
    `PixelCNNPrior`.
    """

    causal = True
    extra_tokens = 0

    def __init__(
        self,
        num_embeddings,
        grid_shape,
        num_classes=None,
        embed_dim=128,
        num_heads=4,
        num_layers=4,
        mlp_ratio=4,
        dropout=0.0,
        label_dropout=0.1,
        image_size=None,
        **kwargs,
    ):
        super().__init__(loss_names=("nll",), **kwargs)
        self.num_embeddings = validation.positive_int("num_embeddings", num_embeddings)
        self.grid_shape = validation.positive_int_tuple("grid_shape", grid_shape)
        if len(self.grid_shape) != 2:
            raise ValueError(f"`grid_shape` must be (height, width). Received: {grid_shape!r}")
        self.num_classes = (
            None if num_classes is None else validation.positive_int("num_classes", num_classes)
        )
        self.embed_dim = validation.positive_int("embed_dim", embed_dim)
        self.num_heads = validation.positive_int("num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"`embed_dim` must be a multiple of num_heads={self.num_heads}. "
                f"Received: embed_dim={embed_dim!r}"
            )
        self.num_layers = validation.positive_int("num_layers", num_layers)
        self.mlp_ratio = validation.positive_int("mlp_ratio", mlp_ratio)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.label_dropout = validation.float_in_range(
            "label_dropout", label_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.image_size = None
        if image_size is not None:
            self.image_size = validation.positive_int_tuple("image_size", image_size)
            if len(self.image_size) != 3:
                raise ValueError(
                    f"`image_size` must be (height, width, channels). Received: {image_size!r}"
                )
        self.length = math.prod(self.grid_shape)
        # One token per code, plus the subclass's own (MaskGIT's mask token).
        policy = self.dtype_policy
        self.token_embedding = layers.Embedding(
            self.num_embeddings + self.extra_tokens,
            self.embed_dim,
            name="token_embedding",
            dtype=policy,
        )
        # Row c is the start token of class c; row num_classes the null class.
        self.start_embedding = layers.Embedding(
            (self.num_classes or 0) + 1, self.embed_dim, name="start_embedding", dtype=policy
        )
        self.position_embedding = layers.Embedding(
            self.sequence_length,
            self.embed_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding",
            dtype=policy,
        )
        self.embedding_dropout = layers.Dropout(self.dropout, dtype=policy)
        self.blocks = [
            TransformerBlock(
                self.embed_dim,
                self.num_heads,
                self.mlp_ratio,
                self.dropout,
                causal=self.causal,
                name=f"block_{index}",
                dtype=policy,
            )
            for index in range(self.num_layers)
        ]
        self.final_norm = layers.LayerNormalization(epsilon=1e-5, name="final_norm", dtype=policy)
        self.head = layers.Dense(self.num_embeddings, name="head", dtype=policy)
        self.bits_per_dim = keras.metrics.Mean(name="bits_per_dim")
        self.label_dropout_seed = keras.random.SeedGenerator(0, name="label_dropout_seed")
        self._compiled_sampler = None

    @property
    def input_values(self):
        """Number of values a code of the call's inputs may take."""
        return self.num_embeddings + self.extra_tokens

    @property
    def sequence_length(self):
        """Tokens per sequence fed to the blocks."""
        return self.length

    @classmethod
    def for_grid(cls, grid, **kwargs):
        """A prior over the codes of `grid` (a `vqkeras.codes.CodeGrid` of
        `model.code_grids()`); `kwargs` are the other constructor arguments."""
        if grid.depth is not None or grid.conditioned_on is not None:
            raise ValueError(
                f"{cls.__name__} models plain grids (h, w) chosen given no other grid; use "
                f"PixelCNNPrior for stacked or conditioned codes. Received: {grid!r}"
            )
        return cls(grid.num_embeddings, grid.spatial_shape, **kwargs)

    def fits(self, grid, condition=None):
        """Whether this prior models the codes of `grid` (given no `condition`)."""
        return condition is None and (self.num_embeddings, self.code_shape) == (
            grid.num_embeddings,
            tuple(grid.shape),
        )

    @property
    def conditional(self):
        """Whether the prior takes class labels."""
        return self.num_classes is not None

    @property
    def null_class(self):
        """Start-token index of the unconditional distribution."""
        return self.num_classes or 0

    @property
    def code_shape(self):
        """Shape of one sample: `grid_shape`."""
        return self.grid_shape

    def build(self, input_shape=None):
        # The layers' shapes follow from the configuration; layers already
        # built (e.g. when deserialized with their build config) are kept.
        sublayers = [
            (self.token_embedding, (None, self.length)),
            (self.start_embedding, (None,)),
            (self.position_embedding, (self.sequence_length,)),
            (self.final_norm, (None, None, self.embed_dim)),
            (self.head, (None, None, self.embed_dim)),
        ]
        sublayers += [(block, (None, None, self.embed_dim)) for block in self.blocks]
        for layer, shape in sublayers:
            if not layer.built:
                layer.build(shape)

    def _build_if_needed(self):
        if not self.built:
            self.build((None, *self.grid_shape))

    # -- input checks -----------------------------------------------------------

    def check_inputs(self, indices, labels=None, num_values=None):
        """Raises a clear error unless `indices` and `labels` suit this prior
        (codes in `[0, num_values)`, by default `[0, num_embeddings)`)."""
        validation.check_code_grids(indices, self.code_shape, num_values or self.num_embeddings)
        validation.check_class_labels(labels, self.num_classes, tuple(indices.shape)[0])

    def _split_inputs(self, x, y=None):
        """`(indices, labels)` from `x` (see the call arguments) and `y`."""
        labels = y if self.conditional else None
        if not isinstance(x, (tuple, list)):
            return x, labels
        if len(x) != 2:
            raise ValueError(
                "Expected code grids or a pair (grids, labels). "
                f"Received a sequence of {len(x)} inputs."
            )
        return x[0], x[1]

    # -- forward ---------------------------------------------------------------

    def _start_labels(self, labels, batch, training=False):
        """Start-token indices `(batch,)`: the labels, some dropped to the null
        class in training; the null class for an unconditional prior."""
        if labels is None:
            return ops.full((batch,), self.null_class, dtype="int32")
        labels = ops.cast(labels, "int32")
        if training and self.label_dropout > 0:
            dropped = keras.random.uniform(ops.shape(labels), seed=self.label_dropout_seed)
            labels = ops.where(dropped < self.label_dropout, self.null_class, labels)
        return labels

    def _head(self, features):
        return ops.cast(self.head(self.final_norm(features)), "float32")

    def _blocks(self, x, training=False):
        """The blocks on token features `(batch, sequence_length, embed_dim)`."""
        x = x + self.position_embedding(ops.arange(self.sequence_length))[None]
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def _logits(self, indices, labels, training=False):
        raise NotImplementedError

    def call(self, inputs, training=None):
        indices, labels = self._split_inputs(inputs)
        self.check_inputs(indices, labels, num_values=self.input_values)
        return self._logits(indices, labels, training=bool(training))

    @property
    def extra_metrics(self):
        return [self.bits_per_dim] if self.image_size is not None else []

    def update_extra_metrics(self, outputs):
        if self.image_size is not None:
            pixel_values = math.prod(self.image_size)
            self.bits_per_dim.update_state(outputs["nll_per_grid"] / (math.log(2) * pixel_values))

    def _check_array_inputs(self, x, y, num_values=None):
        # Built here, since otherwise JAX and PyTorch `fit` build the model by
        # a symbolic call on the grids alone, without the labels.
        self._build_if_needed()
        # Arrays are checked before Keras converts them, so that out-of-range
        # codes or labels fail here with a clear message.
        if isinstance(x, (tuple, list, np.ndarray)):
            indices, labels = self._split_inputs(x, y)
            if all(value is None or isinstance(value, np.ndarray) for value in (indices, labels)):
                self.check_inputs(indices, labels, num_values)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_array_inputs(x, None, num_values=self.input_values)
        return super().predict(x, *args, **kwargs)

    # -- sampling --------------------------------------------------------------

    def _sampling_arguments(self, num, labels, temperature, top_k, top_p, guidance_scale, seed):
        """Checks the arguments of `sample`; returns them as `(num, start_labels,
        temperature, top_k, top_p, guidance_scale, seed)`, with int32 start
        labels `(num,)` (the null class without labels) and float32 tensors."""
        num = validation.positive_int("num", num)
        temperature = validation.float_in_range(
            "temperature", temperature, 0.0, np.inf, low_inclusive=False, high_inclusive=False
        )
        top_k = validation.top_k(top_k, self.num_embeddings)
        if top_p is not None:
            top_p = validation.float_in_range("top_p", top_p, 0.0, 1.0, low_inclusive=False)
        if seed is not None:
            seed = validation.non_negative_int("seed", seed)
        labels = validation.sample_labels(labels, num, self.num_classes)
        if guidance_scale is not None:
            guidance_scale = validation.float_in_range(
                "guidance_scale", guidance_scale, 0.0, np.inf, high_inclusive=False
            )
            if labels is None:
                raise ValueError(
                    "Classifier-free guidance needs `labels` (and a class-conditional prior). "
                    f"Received: guidance_scale={guidance_scale!r}, labels=None"
                )
            # A tensor, so that a new scale does not retrace the compiled loop.
            guidance_scale = ops.convert_to_tensor(guidance_scale, dtype="float32")
        self._build_if_needed()
        start_labels = np.full((num,), self.null_class, dtype="int32")
        if labels is not None:
            start_labels = labels.astype("int32")
        start_labels = ops.convert_to_tensor(start_labels, dtype="int32")
        temperature = ops.convert_to_tensor(temperature, dtype="float32")
        return num, start_labels, temperature, top_k, top_p, guidance_scale, seed

    @staticmethod
    def _guided(logits, guidance_scale):
        """Classifier-free guidance of `[conditional, unconditional]` logits:
        `u + s * (c - u)`, written `(1 - s) * u + s * c` so that s=1 gives
        exactly `c` and s=0 exactly `u`."""
        if guidance_scale is None:
            return logits[0]
        conditional, unconditional = logits
        return (1.0 - guidance_scale) * unconditional + guidance_scale * conditional

    def _draw(self, logits, uniforms, temperature, top_k, top_p):
        """Codes `(num,)` drawn from `logits` `(num, K)` by inverting the CDF at `uniforms`."""
        logits = logits / temperature
        if top_k is not None and top_k < self.num_embeddings:
            kth_largest = ops.top_k(logits, top_k)[0][:, -1:]
            logits = ops.where(logits < kth_largest, -np.inf, logits)
        if top_p is not None and top_p < 1.0:
            ordered = ops.top_k(logits, self.num_embeddings)[0]
            probabilities = ops.softmax(ordered, axis=-1)
            # Keep the most likely codes while the probability before them is
            # below top_p: the smallest set reaching it (the first code always).
            before = ops.cumsum(probabilities, axis=-1) - probabilities
            kept = ops.sum(ops.cast(before < top_p, "int32"), axis=-1, keepdims=True)
            threshold = ops.take_along_axis(ordered, ops.maximum(kept, 1) - 1, axis=-1)
            logits = ops.where(logits < threshold, -np.inf, logits)
        cdf = ops.cumsum(ops.softmax(logits, axis=-1), axis=-1)
        # The first code whose cumulative probability reaches u (scaled by the
        # total, which float rounding keeps only close to 1).
        codes = ops.sum(ops.cast(cdf < uniforms[:, None] * cdf[:, -1:], "int32"), axis=-1)
        return ops.minimum(codes, self.num_embeddings - 1)

    def _run_compiled(self, arguments, static):
        """`_sampling_loop(*arguments, **static)`, compiled where the backend
        allows it (one compilation per static setting)."""
        backend = keras.config.backend()
        if backend == "jax":
            import jax

            if self._compiled_sampler is None:

                def stateless_loop(values, *arguments, **static):
                    mapping = list(zip(self.variables, values))
                    with keras.StatelessScope(state_mapping=mapping):
                        return self._sampling_loop(*arguments, **static)

                self._compiled_sampler = jax.jit(stateless_loop, static_argnames=tuple(static))
            values = [variable.value for variable in self.variables]
            return self._compiled_sampler(values, *arguments, **static)
        if backend == "tensorflow":
            import tensorflow as tf

            if self._compiled_sampler is None:
                self._compiled_sampler = tf.function(self._sampling_loop)
            return self._compiled_sampler(*arguments, **static)
        if backend == "torch":
            import torch

            with torch.no_grad():
                return self._sampling_loop(*arguments, **static)
        return self._sampling_loop(*arguments, **static)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "grid_shape": self.grid_shape,
                "num_classes": self.num_classes,
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout,
                "label_dropout": self.label_dropout,
                "image_size": self.image_size,
            }
        )
        return config
