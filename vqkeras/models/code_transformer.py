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
    checks, the token, class ("start"), condition and positional embeddings,
    the `TransformerBlock`s (causal or not, per `causal`), the head and the
    sampling-argument checks (the rest of a prior's common parts is in
    `CodePrior`). Subclasses set `causal`, `extra_tokens` and
    `sequence_length`, and implement `_logits`, `compute_losses` and `sample`.

    The sequence: the class token, then the condition codes (a condition
    grid's `hc * wc` codes in raster order, all known before sampling), then
    the `h * w * levels` codes, a position's levels coarse to fine (flattened
    stacked codes: level l's code k has its own embedding, row `l * K + k`).
    One head predicts every code; the position embedding tells the level.

    The class token: a class-conditional prior learns one embedding per
    class plus a "null class" (index `num_classes`); in training each label
    is replaced by the null class with probability `label_dropout`, so the
    network also learns the unconditional distribution (for classifier-free
    guidance). An unconditional prior has one class embedding.
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
        depth=None,
        condition_num_embeddings=None,
        condition_grid_shape=None,
        **kwargs,
    ):
        super().__init__(
            num_embeddings,
            grid_shape,
            num_classes=num_classes,
            image_size=image_size,
            depth=depth,
            condition_num_embeddings=condition_num_embeddings,
            condition_grid_shape=condition_grid_shape,
            **kwargs,
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
        # Codes per sequence, and condition codes before them.
        self.length = math.prod(self.code_shape)
        self.prefix_length = math.prod(self.condition_grid_shape) if self.conditioned_on_grid else 0
        # One token per code of each level, plus the subclass's own (MaskGIT's
        # mask token).
        policy = self.dtype_policy
        self.token_embedding = layers.Embedding(
            self.num_embeddings * self.levels + self.extra_tokens,
            self.embed_dim,
            name="token_embedding",
            dtype=policy,
        )
        if self.conditioned_on_grid:
            self.condition_embedding = layers.Embedding(
                self.condition_num_embeddings,
                self.embed_dim,
                name="condition_embedding",
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
        """Tokens per sequence fed to the blocks: the class token, the
        condition codes and the codes but the last (which no later code sees)."""
        return self.prefix_length + self.length

    @property
    def null_class(self):
        """Start-token index of the unconditional distribution."""
        return self.num_classes or 0

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
        if self.conditioned_on_grid:
            sublayers.append((self.condition_embedding, (None, self.prefix_length)))
        for layer, shape in sublayers:
            if not layer.built:
                layer.build(shape)

    def _build_if_needed(self):
        if not self.built:
            self.build((None, *self.grid_shape))

    # -- input checks -----------------------------------------------------------

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

    def embed_codes(self, tokens):
        """Features `(batch, n, embed_dim)` of the first `n` codes of
        raster-flattened sequences `tokens` `(batch, n)`: level l's code k is
        row `l * K + k`; values from `K` up are the subclass's extra tokens."""
        levels = ops.arange(ops.shape(tokens)[1], dtype="int32") % self.levels
        tokens = ops.cast(tokens, "int32")
        rows = ops.where(
            tokens < self.num_embeddings,
            tokens + levels[None, :] * self.num_embeddings,
            tokens + (self.levels - 1) * self.num_embeddings,
        )
        return self.token_embedding(rows)

    def prefix(self, start_labels, condition=None):
        """Features `(batch, 1 + hc * wc, embed_dim)` of the class token and
        the flattened condition codes `(batch, hc * wc)` (none without)."""
        start = self.start_embedding(start_labels)[:, None, :]
        if condition is None:
            return start
        return ops.concatenate([start, self.condition_embedding(condition)], axis=1)

    def _flat(self, codes):
        """int32 `(batch, n)` of code or condition grids `(batch, ...)`; None stays None."""
        if codes is None:
            return None
        return ops.reshape(ops.cast(codes, "int32"), (ops.shape(codes)[0], -1))

    def _head(self, features):
        return ops.cast(self.head(self.final_norm(features)), "float32")

    def _blocks(self, x, training=False):
        """The blocks on token features `(batch, sequence_length, embed_dim)`."""
        x = x + self.position_embedding(ops.arange(self.sequence_length))[None]
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def _logits(self, indices, labels, condition, training=False):
        raise NotImplementedError

    def call(self, inputs, training=None):
        indices, labels, condition = self._split_inputs(inputs)
        self.check_inputs(indices, labels, condition, num_values=self.input_values)
        return self._logits(indices, labels, condition, training=bool(training))

    # -- sampling --------------------------------------------------------------

    def _sampling_arguments(
        self, num, labels, condition, temperature, top_k, top_p, guidance_scale, seed
    ):
        """Checks the arguments of `sample`; returns them as `(num, start_labels,
        condition, temperature, top_k, top_p, guidance_scale, seed)`, with
        int32 start labels `(num,)` (the null class without labels), int32
        flattened condition codes `(num, hc * wc)` (or None) and float32
        tensors."""
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
        condition = self._flat(self._sampling_condition(condition, num))
        return num, start_labels, condition, temperature, top_k, top_p, guidance_scale, seed

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
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout,
                "label_dropout": self.label_dropout,
            }
        )
        return config
