import math

import keras
import numpy as np
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.transformer_block import TransformerBlock
from vqkeras.models.loss_terms_model import LossTermsModel


@keras.saving.register_keras_serializable(package="vqkeras")
class TransformerPrior(LossTermsModel):
    """Autoregressive Transformer prior over the integer code grids of a VQ model.

    Images as tokens: a grid is flattened in raster order to a sequence of
    `h * w` codes, and a decoder-only Transformer models `p(codes) = prod_t
    p(code_t | codes < t)`, optionally given a class label. The input
    sequence is a start token then the codes shifted by one, plus learned
    positional embeddings; pre-norm `TransformerBlock`s with causal
    self-attention and a linear head give `num_embeddings` logits per
    position.

    The start token is the class: a class-conditional prior learns one start
    embedding per class plus a "null class" (index `num_classes`). In
    training, each label is replaced by the null class with probability
    `label_dropout`, so the same network also learns the unconditional
    distribution, which `sample` uses for classifier-free guidance and for
    `labels=None`. An unconditional prior has one start embedding.

    Training: `compile(optimizer)` then `fit(grids)` or `fit(grids, labels)`,
    as for `PixelCNNPrior`. The loss term `nll` is the mean cross-entropy in
    nats per code; with `image_size`, `bits_per_dim` is also logged.

    Sampling: `sample(num, labels, temperature, top_k, top_p,
    guidance_scale, seed)` decodes one position per step of one compiled
    loop (a `jax.jit`ted `fori_loop` on JAX, a `tf.function` on TensorFlow;
    an eager no-grad loop on PyTorch), each step running the blocks on the
    new token only, against a fixed-size key/value cache of the earlier ones.

    Plain grids only: stacked codes (`depth`, RQ-VAE) and condition grids
    (VQ-VAE-2 bottom priors) are for `PixelCNNPrior`.

    Args:
        num_embeddings: number of codes K of the VQ model.
        grid_shape: `(h, w)` of the code grids.
        num_classes: number of classes (labels in `[0, num_classes)`), or
            None for an unconditional prior.
        embed_dim: width of the token features; a multiple of `num_heads`.
        num_heads: attention heads per block.
        num_layers: number of Transformer blocks.
        mlp_ratio: hidden width of each block's MLP over `embed_dim`.
        dropout: dropout rate in the blocks and on the input embeddings.
        label_dropout: probability, in training, of replacing a label by the
            null class (for classifier-free guidance); ignored by an
            unconditional prior.
        image_size: `(H, W, C)` of the images the codes come from, for
            `bits_per_dim`; None to log no `bits_per_dim`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: int code grids `(batch, h, w)` in `[0, num_embeddings)`; for a
            class-conditional prior a pair `(grids, labels)` with int labels
            `(batch,)`. In `fit` and `evaluate`, the labels may also come as `y`.
        training: whether dropout (and label dropout) is on.

    Returns:
        float32 logits `(batch, h, w, num_embeddings)`.

    Example:

    ```python
    grids = vqvae.encode_indices(x_train)          # int32 (N, 7, 7)
    prior = vqkeras.models.TransformerPrior(
        num_embeddings=128, grid_shape=(7, 7), num_classes=10, image_size=(28, 28, 1)
    )
    prior.compile(optimizer=keras.optimizers.AdamW(3e-4))
    prior.fit(grids, y_train, epochs=10, batch_size=128)
    codes = prior.sample(16, labels=np.arange(16) % 10, guidance_scale=2.0, seed=0)
    images = vqvae.decode_indices(codes)           # (16, 28, 28, 1)
    ```

    Reference:
        Esser et al., "Taming Transformers for High-Resolution Image
        Synthesis", 2021; Ho and Salimans, "Classifier-Free Diffusion
        Guidance", 2022; Sun et al., "Autoregressive Model Beats Diffusion:
        Llama for Scalable Image Generation" (LlamaGen), 2024.
    """

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
        policy = self.dtype_policy
        self.token_embedding = layers.Embedding(
            self.num_embeddings, self.embed_dim, name="token_embedding", dtype=policy
        )
        # Row c is the start token of class c; row num_classes the null class.
        self.start_embedding = layers.Embedding(
            (self.num_classes or 0) + 1, self.embed_dim, name="start_embedding", dtype=policy
        )
        self.position_embedding = layers.Embedding(
            self.length,
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
                causal=True,
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

    @classmethod
    def for_grid(cls, grid, **kwargs):
        """A prior over the codes of `grid` (a `vqkeras.codes.CodeGrid` of
        `model.code_grids()`); `kwargs` are the other constructor arguments."""
        if grid.depth is not None or grid.conditioned_on is not None:
            raise ValueError(
                "TransformerPrior models plain grids (h, w) chosen given no other grid; use "
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
            (self.position_embedding, (self.length,)),
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

    def check_inputs(self, indices, labels=None):
        """Raises a clear error unless `indices` and `labels` suit this prior."""
        shape = tuple(indices.shape)
        expected = ", ".join(map(str, self.code_shape))
        if len(shape) != 3 or any(
            size is not None and size != wanted for size, wanted in zip(shape[1:], self.code_shape)
        ):
            raise ValueError(
                f"Expected code grids of shape (batch, {expected}). Received shape={shape}."
            )
        validation.check_indices(indices, self.num_embeddings, name="code indices")
        if not self.conditional:
            if labels is not None:
                raise ValueError(
                    "This prior is unconditional (num_classes=None): labels are not accepted."
                )
            return
        if labels is None:
            raise ValueError(
                f"This prior is class-conditional (num_classes={self.num_classes}): labels of "
                "shape (batch,) are required."
            )
        label_shape = tuple(labels.shape)
        if len(label_shape) != 1 or (
            None not in (label_shape[0], shape[0]) and label_shape[0] != shape[0]
        ):
            raise ValueError(
                f"Expected labels of shape ({shape[0]},), one per code grid. "
                f"Received shape={label_shape}."
            )
        validation.check_indices(labels, self.num_classes, name="labels")

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

    def sequence_logits(self, indices, start_labels, training=False):
        """float32 logits `(batch, h * w, K)` of raster-flattened `indices`
        `(batch, h * w)` given start-token indices `(batch,)`; the logits at t
        depend on the codes before t only."""
        start = self.start_embedding(start_labels)[:, None, :]
        # Inputs are shifted by one: position t sees the start token and
        # codes < t, and predicts code t.
        tokens = self.token_embedding(indices[:, :-1])
        x = ops.concatenate([start, tokens], axis=1)
        x = x + self.position_embedding(ops.arange(self.length))[None]
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self._head(x)

    def _logits(self, indices, labels, training=False):
        batch = ops.shape(indices)[0]
        flat = ops.reshape(ops.cast(indices, "int32"), (batch, self.length))
        start_labels = self._start_labels(labels, batch, training)
        logits = self.sequence_logits(flat, start_labels, training)
        return ops.reshape(logits, (batch, *self.grid_shape, self.num_embeddings))

    def call(self, inputs, training=None):
        indices, labels = self._split_inputs(inputs)
        self.check_inputs(indices, labels)
        return self._logits(indices, labels, training=bool(training))

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        indices, labels = self._split_inputs(x, y)
        self.check_inputs(indices, labels)
        self._build_if_needed()
        logits = self._logits(indices, labels, training=training)
        per_code = keras.losses.sparse_categorical_crossentropy(indices, logits, from_logits=True)
        nll_per_grid = ops.sum(ops.reshape(per_code, (ops.shape(per_code)[0], -1)), axis=-1)
        terms = {"nll": ops.mean(nll_per_grid) / self.length}
        return terms, {"nll_per_grid": nll_per_grid}

    @property
    def extra_metrics(self):
        return [self.bits_per_dim] if self.image_size is not None else []

    def update_extra_metrics(self, outputs):
        if self.image_size is not None:
            pixel_values = math.prod(self.image_size)
            self.bits_per_dim.update_state(outputs["nll_per_grid"] / (math.log(2) * pixel_values))

    def _check_array_inputs(self, x, y):
        # Built here, since otherwise JAX and PyTorch `fit` build the model by
        # a symbolic call on the grids alone, without the labels.
        self._build_if_needed()
        # Arrays are checked before Keras converts them, so that out-of-range
        # codes or labels fail here with a clear message.
        if isinstance(x, (tuple, list, np.ndarray)):
            indices, labels = self._split_inputs(x, y)
            if all(value is None or isinstance(value, np.ndarray) for value in (indices, labels)):
                self.check_inputs(indices, labels)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_array_inputs(x, None)
        return super().predict(x, *args, **kwargs)

    # -- cached decoding -------------------------------------------------------

    def initial_cache(self, batch):
        """An empty key/value cache for `batch` sequences: one `(keys, values)`
        pair of zeros `(batch, num_heads, h * w, embed_dim // num_heads)` per block."""
        shape = (batch, self.num_heads, self.length, self.embed_dim // self.num_heads)
        dtype = self.dtype_policy.compute_dtype
        return tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in self.blocks)

    def next_logits(self, previous, position, start_labels, cache):
        """Logits of the code at `position`, given the cache of the positions before.

        Args:
            previous: int codes `(batch,)` at `position - 1` (ignored at
                position 0, where the start token is the input).
            position: int scalar (may be a traced tensor) in `[0, h * w)`.
            start_labels: int start-token indices `(batch,)`: labels, or
                `null_class` for the unconditional distribution.
            cache: the cache of `initial_cache`, filled up to `position`.

        Returns:
            `(logits, cache)`: float32 logits `(batch, K)` (those of the full
            forward pass at `position`, up to float rounding) and the cache
            with `position` written in.
        """
        token = self.token_embedding(ops.maximum(ops.cast(previous, "int32"), 0))
        x = ops.where(position == 0, self.start_embedding(start_labels), token)
        # A table lookup rather than a layer call: `position` may be a Python int.
        x = x + ops.take(self.position_embedding.embeddings, position, axis=0)
        x = x[:, None, :]
        new_cache = []
        for block, block_cache in zip(self.blocks, cache):
            x, block_cache = block.step(x, position, block_cache)
            new_cache.append(block_cache)
        return self._head(x)[:, 0], tuple(new_cache)

    # -- sampling --------------------------------------------------------------

    def sample(
        self,
        num,
        labels=None,
        temperature=1.0,
        top_k=None,
        top_p=None,
        guidance_scale=None,
        seed=None,
        use_cache=True,
    ):
        """Draws `num` code grids, one position at a time in raster order.

        Each code is drawn from `softmax(logits / temperature)`, restricted to
        the `top_k` most likely codes and to the smallest set of most likely
        codes whose probability reaches `top_p` when they are set, by
        inverting the cumulative distribution at a uniform number. The
        uniform numbers (one per code) come from `keras.random.uniform` with
        `seed`, so the same seed gives the same grids on the same backend.

        Args:
            num: number of grids to draw.
            labels: int array `(num,)` in `[0, num_classes)` for a
                class-conditional prior, or None to draw from its
                unconditional distribution (the null class); must be None for
                an unconditional prior.
            temperature: positive float; below 1 sharpens the distribution.
            top_k: None, or an int in `[1, num_embeddings]`: only the codes
                whose logit is at least the k-th largest can be drawn.
            top_p: None, or a float in `(0, 1]`: nucleus sampling.
            guidance_scale: None (plain conditional sampling), or a
                non-negative float s for classifier-free guidance with
                `labels`: the logits are `u + s * (c - u)` of the unconditional
                `u` and conditional `c` logits (computed as `(1 - s) * u + s *
                c`, so that s=1 gives exactly the conditional and s=0 exactly
                the unconditional logits).
            seed: None (draws from Keras' global seed generator) or a
                non-negative int.
            use_cache: whether each step runs on the new token against the
                key/value cache (True), or recomputes the whole sequence
                (False; slower, for comparison).

        Returns:
            int32 tensor `(num, h, w)` with codes in `[0, num_embeddings)`,
            ready for the VQ model's `decode_indices`.
        """
        num = validation.positive_int("num", num)
        temperature = validation.float_in_range(
            "temperature", temperature, 0.0, np.inf, low_inclusive=False, high_inclusive=False
        )
        if top_k is not None:
            if (
                isinstance(top_k, bool)
                or not isinstance(top_k, (int, np.integer))
                or not (1 <= top_k <= self.num_embeddings)
            ):
                raise ValueError(
                    f"`top_k` must be None or an integer in [1, {self.num_embeddings}]. "
                    f"Received: top_k={top_k!r}"
                )
            top_k = int(top_k)
        if top_p is not None:
            top_p = validation.float_in_range("top_p", top_p, 0.0, 1.0, low_inclusive=False)
        if seed is not None:
            seed = validation.non_negative_int("seed", seed)
        if labels is not None:
            if not self.conditional:
                raise ValueError(
                    "This prior is unconditional (num_classes=None): `labels` are not accepted."
                )
            labels = np.asarray(ops.convert_to_numpy(labels))
            if labels.shape != (num,):
                raise ValueError(
                    f"Expected labels of shape ({num},), one per sample. "
                    f"Received shape={labels.shape}."
                )
            validation.check_indices(labels, self.num_classes, name="labels")
        if guidance_scale is not None:
            guidance_scale = validation.float_in_range(
                "guidance_scale", guidance_scale, 0.0, np.inf, high_inclusive=False
            )
            if labels is None:
                raise ValueError(
                    "Classifier-free guidance needs `labels` (and a class-conditional prior). "
                    f"Received: guidance_scale={guidance_scale!r}, labels=None"
                )
            guidance_scale = ops.convert_to_tensor(guidance_scale, dtype="float32")
        use_cache = bool(use_cache)
        self._build_if_needed()
        start_labels = np.full((num,), self.null_class, dtype="int32")
        if labels is not None:
            start_labels = labels.astype("int32")
        start_labels = ops.convert_to_tensor(start_labels, dtype="int32")
        # Uniforms in (0, 1]: a draw of exactly 0 could select a code of zero
        # probability.
        uniforms = 1.0 - keras.random.uniform((self.length, num), dtype="float32", seed=seed)
        temperature = ops.convert_to_tensor(temperature, dtype="float32")
        arguments = (start_labels, uniforms, temperature, guidance_scale)
        static = {"top_k": top_k, "top_p": top_p, "use_cache": use_cache}
        flat = self._run_compiled(arguments, static)
        return ops.reshape(flat, (num, *self.grid_shape))

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

    def _sampling_loop(self, start_labels, uniforms, temperature, guidance_scale, **static):
        """Draws the `h * w` codes of `num` sequences in raster order."""
        top_k, top_p, use_cache = static["top_k"], static["top_p"], static["use_cache"]
        num = ops.shape(start_labels)[0]
        guided = guidance_scale is not None
        null_labels = ops.full((num,), self.null_class, dtype="int32")
        slots = ops.arange(self.length)[None, :]

        def logits_at(position, codes, caches):
            """Logits `(num, K)` at `position` of each distribution drawn from
            (the conditional one, then the unconditional one when guided)."""
            starts = (start_labels, null_labels) if guided else (start_labels,)
            if not use_cache:
                # Codes at and after `position` are still zeros: the causal
                # mask hides them.
                logits = [
                    ops.take(self.sequence_logits(codes, start), position, axis=1)
                    for start in starts
                ]
                return logits, caches
            previous = ops.take(codes, ops.maximum(position - 1, 0), axis=1)
            # Guided sampling runs the two distributions as two batches of
            # `num` (not one of 2 * num): each does the same arithmetic as
            # unguided sampling, so guidance 1 and 0 give exactly its samples.
            outputs = [
                self.next_logits(previous, position, start, cache)
                for start, cache in zip(starts, caches)
            ]
            return [logits for logits, _ in outputs], tuple(cache for _, cache in outputs)

        def body(position, state):
            codes, caches = state
            logits, caches = logits_at(position, codes, caches)
            if guided:
                conditional, unconditional = logits
                logits = (1.0 - guidance_scale) * unconditional + guidance_scale * conditional
            else:
                logits = logits[0]
            drawn = self._draw(
                logits, ops.take(uniforms, position, axis=0), temperature, top_k, top_p
            )
            codes = ops.where(slots == position, drawn[:, None], codes)
            return codes, caches

        caches = ()
        if use_cache:
            caches = tuple(self.initial_cache(num) for _ in range(2 if guided else 1))
        codes = ops.zeros((num, self.length), dtype="int32")
        codes, _ = ops.fori_loop(0, self.length, body, (codes, caches))
        return codes

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
