import keras
from keras import ops

from vqkeras.models.code_transformer import CodeTransformer


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

    Sampling: `sample(num, labels, condition, temperature, top_k, top_p,
    guidance_scale, seed)` decodes one position per step of one compiled
    loop (a `jax.jit`ted `fori_loop` on JAX, a `tf.function` on TensorFlow;
    an eager no-grad loop on PyTorch), each step running the blocks on the
    new token only, against a fixed-size key/value cache of the earlier ones.

    Stacked codes (RQ-VAE): with `depth`, the `depth` codes of a position
    follow each other in the sequence, coarse to fine, before the next
    position (the flattened alternative to the RQ-Transformer's depth
    model), each level's codes with their own embeddings.

    A coarser code grid as condition (VQ-VAE-2 bottom prior): with
    `condition_num_embeddings` and `condition_grid_shape`, the condition
    codes, raster-flattened, come between the start token and the codes:
    every code attends to all of them. Sampling feeds them through the cache
    before the first code is drawn.

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
        depth: stacked codes per position (an RQ-VAE's levels), or None.
        condition_num_embeddings: codes of the condition grid, or None.
        condition_grid_shape: `(hc, wc)` of the condition grid, dividing
            `grid_shape`; set with `condition_num_embeddings`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: int code grids `(batch, h, w)` (`(batch, h, w, depth)` with
            `depth`) in `[0, num_embeddings)`; for a class-conditional prior
            a pair `(grids, labels)` with int labels `(batch,)`; for a prior
            with a condition grid a pair `(grids, condition_grids)` or a
            triple `(grids, condition_grids, labels)`. In `fit` and
            `evaluate`, the labels may also come as `y`.
        training: whether dropout (and label dropout) is on.

    Returns:
        float32 logits `(batch, h, w, num_embeddings)` (`(batch, h, w, depth,
        num_embeddings)` with `depth`).

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

    def sequence_logits(self, indices, start_labels, condition=None, training=False):
        """float32 logits `(batch, L, K)` of raster-flattened codes `indices`
        `(batch, L)` given start-token indices `(batch,)` and flattened
        condition codes `(batch, hc * wc)` (None without a condition grid);
        the logits of code t depend on the codes before t only."""
        # Inputs are shifted by one: the output at the last prefix token
        # predicts code 0, the output at code t - 1 predicts code t.
        x = ops.concatenate(
            [self.prefix(start_labels, condition), self.embed_codes(indices[:, :-1])], axis=1
        )
        return self._head(self._blocks(x, training=training))[:, self.prefix_length :]

    def _logits(self, indices, labels, condition, training=False):
        batch = ops.shape(indices)[0]
        start_labels = self._start_labels(labels, batch, training)
        logits = self.sequence_logits(
            self._flat(indices), start_labels, self._flat(condition), training
        )
        return ops.reshape(logits, (batch, *self.code_shape, self.num_embeddings))

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        indices, labels, condition = self._split_inputs(x, y)
        self.check_inputs(indices, labels, condition)
        self._build_if_needed()
        logits = self._logits(indices, labels, condition, training=training)
        per_code = keras.losses.sparse_categorical_crossentropy(indices, logits, from_logits=True)
        nll_per_grid = ops.sum(ops.reshape(per_code, (ops.shape(per_code)[0], -1)), axis=-1)
        terms = {"nll": ops.mean(nll_per_grid) / self.length}
        return terms, {"nll_per_grid": nll_per_grid}

    # -- cached decoding -------------------------------------------------------

    def initial_cache(self, batch):
        """An empty key/value cache for `batch` sequences: one `(keys, values)`
        pair of zeros `(batch, num_heads, sequence_length, embed_dim //
        num_heads)` per block."""
        shape = (batch, self.num_heads, self.sequence_length, self.embed_dim // self.num_heads)
        dtype = self.dtype_policy.compute_dtype
        return tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in self.blocks)

    def next_logits(self, previous, position, start_labels, cache, condition=None):
        """One step of the cache: the input at sequence `position`, and the
        logits of what follows it.

        The sequence is the start token (position 0), the `P = hc * wc`
        condition codes (positions 1 to P), then the codes but the last
        (code t at position P + 1 + t); the output at position p predicts
        code `p - P` (nothing for p < P).

        Args:
            previous: int codes `(batch,)`: code `position - P - 1` (ignored
                at positions up to P, whose inputs are the start token and
                the condition codes).
            position: int scalar (may be a traced tensor) in
                `[0, sequence_length)`.
            start_labels: int start-token indices `(batch,)`: labels, or
                `null_class` for the unconditional distribution.
            cache: the cache of `initial_cache`, filled up to `position`.
            condition: int flattened condition codes `(batch, P)`, or None
                without a condition grid.

        Returns:
            `(logits, cache)`: float32 logits `(batch, K)` of code
            `position - P` (those of the full forward pass, up to float
            rounding) and the cache with `position` written in.
        """
        position = ops.convert_to_tensor(position, dtype="int32")
        code_index = position - self.prefix_length - 1
        # The previous code with its level's offset, as `embed_codes` gives it.
        level = ops.maximum(code_index, 0) % self.levels
        row = ops.maximum(ops.cast(previous, "int32"), 0) + level * self.num_embeddings
        x = self.token_embedding(row)
        if condition is not None:
            index = ops.clip(position - 1, 0, self.prefix_length - 1)
            given = self.condition_embedding(ops.take(condition, index, axis=1))
            x = ops.where(position <= self.prefix_length, given, x)
        x = ops.where(position == 0, self.start_embedding(start_labels), x)
        # A table lookup rather than a layer call on a scalar.
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
        condition=None,
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
            condition: int condition grids `(num, hc, wc)`; required iff the
                prior has a condition grid (e.g. top codes sampled by a top
                prior, for a VQ-VAE-2 bottom prior).
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
            int32 tensor `(num, h, w)` (`(num, h, w, depth)` with `depth`)
            with codes in `[0, num_embeddings)`, ready for the VQ model's
            `decode_indices`.
        """
        num, start_labels, condition, temperature, top_k, top_p, guidance_scale, seed = (
            self._sampling_arguments(
                num, labels, condition, temperature, top_k, top_p, guidance_scale, seed
            )
        )
        # Uniforms in (0, 1]: a draw of exactly 0 could select a code of zero
        # probability.
        uniforms = 1.0 - keras.random.uniform((self.length, num), dtype="float32", seed=seed)
        arguments = (start_labels, condition, uniforms, temperature, guidance_scale)
        static = {"top_k": top_k, "top_p": top_p, "use_cache": bool(use_cache)}
        flat = self._run_compiled(arguments, static)
        return ops.reshape(flat, (num, *self.code_shape))

    def _sampling_loop(
        self, start_labels, condition, uniforms, temperature, guidance_scale, **static
    ):
        """Draws the `L` codes of `num` sequences in raster order.

        With the cache, the loop runs over every position of the sequence:
        the start token and the condition codes go through the cache first
        (their outputs draw nothing), then each step feeds the code drawn at
        the step before. Without it, each code is drawn from a full forward
        pass over the codes drawn so far.
        """
        top_k, top_p, use_cache = static["top_k"], static["top_p"], static["use_cache"]
        num = ops.shape(start_labels)[0]
        guided = guidance_scale is not None
        null_labels = ops.full((num,), self.null_class, dtype="int32")
        slots = ops.arange(self.length)[None, :]
        first = self.prefix_length if use_cache else 0

        def logits_at(index, codes, caches):
            """Logits `(num, K)` of code `index` (drawing nothing for a
            negative one) under each distribution drawn from (the conditional
            one, then the unconditional one when guided)."""
            starts = (start_labels, null_labels) if guided else (start_labels,)
            if not use_cache:
                # Codes at and after `index` are still zeros: the causal mask
                # hides them.
                logits = [
                    ops.take(self.sequence_logits(codes, start, condition), index, axis=1)
                    for start in starts
                ]
                return logits, caches
            position = index + self.prefix_length
            previous = ops.take(codes, ops.maximum(index - 1, 0), axis=1)
            # Guided sampling runs the two distributions as two batches of
            # `num` (not one of 2 * num): each does the same arithmetic as
            # unguided sampling, so guidance 1 and 0 give exactly its samples.
            outputs = [
                self.next_logits(previous, position, start, cache, condition)
                for start, cache in zip(starts, caches)
            ]
            return [logits for logits, _ in outputs], tuple(cache for _, cache in outputs)

        def body(step, state):
            codes, caches = state
            index = step - first
            logits, caches = logits_at(index, codes, caches)
            logits = self._guided(logits, guidance_scale)
            uniform = ops.take(uniforms, ops.maximum(index, 0), axis=0)
            drawn = self._draw(logits, uniform, temperature, top_k, top_p)
            # Nothing is drawn while the prefix fills the cache (index < 0).
            codes = ops.where(slots == index, drawn[:, None], codes)
            return codes, caches

        caches = ()
        if use_cache:
            caches = tuple(self.initial_cache(num) for _ in range(2 if guided else 1))
        codes = ops.zeros((num, self.length), dtype="int32")
        codes, _ = ops.fori_loop(0, first + self.length, body, (codes, caches))
        return codes
