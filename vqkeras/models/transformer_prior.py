import keras
from keras import ops

from vqkeras.models.code_transformer import CodeTransformer


@keras.saving.register_keras_serializable(package="vqkeras")
@keras.saving.register_keras_serializable(package="vqkeras")
class TransformerPrior(CodeTransformer):
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

    causal = True
    sampling_options = ("temperature", "top_k", "top_p", "guidance_scale")

    def sequence_logits(self, indices, start_labels, training=False):
        """float32 logits `(batch, h * w, K)` of raster-flattened `indices`
        `(batch, h * w)` given start-token indices `(batch,)`; the logits at t
        depend on the codes before t only."""
        start = self.start_embedding(start_labels)[:, None, :]
        # Inputs are shifted by one: position t sees the start token and
        # codes < t, and predicts code t.
        tokens = self.token_embedding(indices[:, :-1])
        x = ops.concatenate([start, tokens], axis=1)
        return self._head(self._blocks(x, training=training))

    def _logits(self, indices, labels, training=False):
        batch = ops.shape(indices)[0]
        flat = ops.reshape(ops.cast(indices, "int32"), (batch, self.length))
        start_labels = self._start_labels(labels, batch, training)
        logits = self.sequence_logits(flat, start_labels, training)
        return ops.reshape(logits, (batch, *self.grid_shape, self.num_embeddings))

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        indices, labels, _ = self._split_inputs(x, y)
        self.check_inputs(indices, labels)
        self._build_if_needed()
        logits = self._logits(indices, labels, training=training)
        per_code = keras.losses.sparse_categorical_crossentropy(indices, logits, from_logits=True)
        nll_per_grid = ops.sum(ops.reshape(per_code, (ops.shape(per_code)[0], -1)), axis=-1)
        terms = {"nll": ops.mean(nll_per_grid) / self.length}
        return terms, {"nll_per_grid": nll_per_grid}

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
        num, start_labels, temperature, top_k, top_p, guidance_scale, seed = (
            self._sampling_arguments(num, labels, temperature, top_k, top_p, guidance_scale, seed)
        )
        # Uniforms in (0, 1]: a draw of exactly 0 could select a code of zero
        # probability.
        uniforms = 1.0 - keras.random.uniform((self.length, num), dtype="float32", seed=seed)
        arguments = (start_labels, uniforms, temperature, guidance_scale)
        static = {"top_k": top_k, "top_p": top_p, "use_cache": bool(use_cache)}
        flat = self._run_compiled(arguments, static)
        return ops.reshape(flat, (num, *self.grid_shape))

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
            logits = self._guided(logits, guidance_scale)
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
