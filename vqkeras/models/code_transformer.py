import math

import keras
import numpy as np
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.transformer_block import TransformerBlock
from vqkeras.models.code_prior import CodePrior


class CodeTransformer(CodePrior):
    """Base of the Transformer priors over raster-flattened code grids.

    Holds what `TransformerPrior` (autoregressive) and `MaskGITPrior`
    (masked, bidirectional) share: the constructor arguments and their
    checks, the token, class ("start") and positional embeddings, the
    `TransformerBlock`s (causal or not, per `causal`), the head,
    `for_grid`/`fits` and the sampling-argument checks (the rest of a prior's
    common parts is in `CodePrior`). Subclasses set `causal`, `extra_tokens` and `sequence_length`,
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
        super().__init__(**kwargs)
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
        self.label_dropout_seed = keras.random.SeedGenerator(0, name="label_dropout_seed")

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

    def _split_inputs(self, x, y=None):
        """`(indices, labels, None)` from `x` (see the call arguments) and `y`:
        no condition grid."""
        labels = y if self.conditional else None
        if not isinstance(x, (tuple, list)):
            return x, labels, None
        if len(x) != 2:
            raise ValueError(
                "Expected code grids or a pair (grids, labels). "
                f"Received a sequence of {len(x)} inputs."
            )
        return x[0], x[1], None

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
        indices, labels, _ = self._split_inputs(inputs)
        self.check_inputs(indices, labels, num_values=self.input_values)
        return self._logits(indices, labels, training=bool(training))

    # -- sampling --------------------------------------------------------------

    def _sampling_arguments(self, num, labels, temperature, top_k, top_p, guidance_scale, seed):
        """Checks the arguments of `sample`; returns them as `(num, start_labels,
        temperature, top_k, top_p, guidance_scale, seed)`, with int32 start
        labels `(num,)` (the null class without labels) and float32 tensors."""
        num, temperature, top_k, top_p, seed = self._check_sampling_options(
            num, temperature, top_k, top_p, seed
        )
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
