import keras
from keras import layers, ops

from vqkeras import validation


@keras.saving.register_keras_serializable(package="vqkeras")
class TransformerBlock(layers.Layer):
    """Pre-norm Transformer block: self-attention then an MLP, each residual.

    `x + attention(norm(x))`, then `x + mlp(norm(x))`, as in GPT-2. The
    attention is written out (queries, keys and values from one Dense layer,
    scores and softmax in float32) so that a decoder can also run it one
    position at a time on a key/value cache with `step`, which
    `keras.layers.MultiHeadAttention` does not offer.

    Args:
        embed_dim: width of the token features; a multiple of `num_heads`.
        num_heads: number of attention heads.
        mlp_ratio: hidden width of the MLP over `embed_dim`.
        dropout: dropout rate of the attention weights' output and of the MLP.
        causal: whether position t attends to positions <= t only
            (autoregressive), or to every position (bidirectional).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: float features `(batch, length, embed_dim)`.
        training: whether dropout is on.

    Returns:
        features of the same shape.

    Reference:
        Vaswani et al., "Attention Is All You Need", 2017; Radford et al.,
        "Language Models are Unsupervised Multitask Learners", 2019.
    """

    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout=0.0, causal=True, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = validation.positive_int("embed_dim", embed_dim)
        self.num_heads = validation.positive_int("num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"`embed_dim` must be a multiple of `num_heads`={self.num_heads}. "
                f"Received: embed_dim={embed_dim!r}"
            )
        self.mlp_ratio = validation.positive_int("mlp_ratio", mlp_ratio)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.causal = bool(causal)
        self.head_dim = self.embed_dim // self.num_heads
        policy = self.dtype_policy
        self.attention_norm = layers.LayerNormalization(
            epsilon=1e-5, name="attention_norm", dtype=policy
        )
        self.qkv = layers.Dense(3 * self.embed_dim, name="qkv", dtype=policy)
        self.attention_output = layers.Dense(self.embed_dim, name="attention_output", dtype=policy)
        self.mlp_norm = layers.LayerNormalization(epsilon=1e-5, name="mlp_norm", dtype=policy)
        self.mlp_hidden = layers.Dense(
            self.mlp_ratio * self.embed_dim, activation="gelu", name="mlp_hidden", dtype=policy
        )
        self.mlp_output = layers.Dense(self.embed_dim, name="mlp_output", dtype=policy)
        self.attention_dropout = layers.Dropout(self.dropout, dtype=policy)
        self.mlp_dropout = layers.Dropout(self.dropout, dtype=policy)

    def build(self, input_shape=None):
        features = (None, None, self.embed_dim)
        hidden = (None, None, self.mlp_ratio * self.embed_dim)
        for layer, shape in [
            (self.attention_norm, features),
            (self.qkv, features),
            (self.attention_output, features),
            (self.mlp_norm, features),
            (self.mlp_hidden, features),
            (self.mlp_output, hidden),
        ]:
            if not layer.built:
                layer.build(shape)

    def _heads(self, x):
        """Queries, keys and values `(batch, heads, length, head_dim)` of `x`."""
        qkv = self.qkv(self.attention_norm(x))
        qkv = ops.reshape(qkv, (ops.shape(x)[0], -1, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, queries, keys, values, allowed):
        """Attention of `queries` over `keys`/`values` where `allowed` (broadcast
        to `(q_length, k_length)`), merged back to `(batch, q_length, embed_dim)`."""
        # Scores and softmax in float32: under a mixed policy, float16 scores
        # overflow and the softmax loses the small weights.
        scores = ops.einsum(
            "bhqd,bhkd->bhqk", ops.cast(queries, "float32"), ops.cast(keys, "float32")
        ) / (self.head_dim**0.5)
        if allowed is not None:
            # A disallowed key gets weight exp(-1e30 - max) = 0 exactly, so it
            # cannot leak into the output (the causality tests rely on it).
            scores = ops.where(allowed, scores, -1e30)
        weights = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
        attended = ops.einsum("bhqk,bhkd->bhqd", weights, values)
        attended = ops.transpose(attended, (0, 2, 1, 3))
        return ops.reshape(attended, (ops.shape(attended)[0], -1, self.embed_dim))

    def _mlp(self, x, training):
        return self.mlp_dropout(
            self.mlp_output(self.mlp_hidden(self.mlp_norm(x))), training=training
        )

    def call(self, x, training=None):
        queries, keys, values = self._heads(x)
        allowed = None
        if self.causal:
            length = ops.shape(x)[1]
            positions = ops.arange(length)
            allowed = positions[None, :] <= positions[:, None]
        attended = self._attend(queries, keys, values, allowed)
        x = x + self.attention_dropout(self.attention_output(attended), training=training)
        return x + self._mlp(x, training)

    def step(self, x, position, cache):
        """One position of a causal decoder, on a key/value cache.

        Args:
            x: features `(batch, 1, embed_dim)` of the token at `position`.
            position: int scalar (may be a traced tensor), the index of `x` in
                the sequence.
            cache: pair `(keys, values)`, each `(batch, heads, max_length,
                head_dim)`, holding the keys and values of positions
                `< position` (later entries are ignored).

        Returns:
            `(features, cache)`: the features `(batch, 1, embed_dim)` at
            `position` (equal to `call` on the whole prefix at that position, up
            to float rounding) and the cache with this position's keys and
            values written in.
        """
        queries, keys, values = self._heads(x)
        cached_keys, cached_values = cache
        slots = ops.arange(ops.shape(cached_keys)[2])
        # A fixed-size cache written with a mask rather than a dynamic slice:
        # one shape for every step, so the loop compiles once on every backend.
        here = (slots == position)[None, None, :, None]
        cached_keys = ops.where(here, keys, cached_keys)
        cached_values = ops.where(here, values, cached_values)
        allowed = (slots <= position)[None, :]
        attended = self._attend(queries, cached_keys, cached_values, allowed)
        x = x + self.attention_output(attended)
        return x + self._mlp(x, False), (cached_keys, cached_values)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout,
                "causal": self.causal,
            }
        )
        return config
