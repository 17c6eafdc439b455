import math

import keras
from keras import ops

from vqkeras import validation
from vqkeras.models.code_transformer import CodeTransformer


@keras.saving.register_keras_serializable(package="vqkeras")
class MaskGITPrior(CodeTransformer):
    """MaskGIT: a bidirectional Transformer that fills in masked codes.

    A grid is flattened in raster order; a class token (see
    `TransformerPrior`: one per class plus a null class for label dropout
    and classifier-free guidance) comes first, and bidirectional
    `TransformerBlock`s predict every masked code from all visible ones.

    Training: `compile(optimizer)` then `fit(grids)` or `fit(grids, labels)`.
    Each grid gets a mask ratio `cos(pi / 2 * r)` with `r ~ U(0, 1)` (at least
    one code masked), its codes at random positions are replaced by the mask
    token (index `num_embeddings`), and the loss term `nll` is the
    cross-entropy of the masked codes, in nats per masked code. It is not a
    likelihood of the grids, so there is no `bits_per_dim` (`image_size` is
    not accepted).

    Sampling: `sample(num, labels, num_steps, ...)` starts from a fully
    masked grid and decodes in `num_steps` parallel steps: at step t every
    masked code is drawn, and the most confident draws (log-probability
    plus Gumbel noise scaled by `choice_temperature * (1 - (t + 1) /
    num_steps)`, annealed to none at the end) are kept so that
    `mask_schedule(L, num_steps)[t]` of the `L` codes stay masked; kept
    codes are final.

    Stacked codes (`depth`) and a condition grid (`condition_num_embeddings`,
    `condition_grid_shape`) as in `TransformerPrior`: the levels of a
    position follow each other in the sequence, and the condition codes,
    never masked, come after the class token.

    Args:
        num_embeddings: number of codes K of the VQ model.
        grid_shape: `(h, w)` of the code grids.
        num_classes: number of classes, or None for an unconditional prior.
        embed_dim: width of the token features; a multiple of `num_heads`.
        num_heads: attention heads per block.
        num_layers: number of Transformer blocks.
        mlp_ratio: hidden width of each block's MLP over `embed_dim`.
        dropout: dropout rate in the blocks and on the input embeddings.
        label_dropout: probability, in training, of replacing a label by the
            null class; ignored by an unconditional prior.
        depth: stacked codes per position (an RQ-VAE's levels), or None.
        condition_num_embeddings: codes of the condition grid, or None.
        condition_grid_shape: `(hc, wc)` of the condition grid, dividing
            `grid_shape`; set with `condition_num_embeddings`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: int code grids `(batch, h, w)` in `[0, num_embeddings]`, the
            value `num_embeddings` (`mask_token`) marking masked codes; for a
            class-conditional prior a pair `(grids, labels)`.
        training: whether dropout (and label dropout) is on.

    Returns:
        float32 logits `(batch, h, w, num_embeddings)` of every position.

    Example:

    ```python
    prior = vqkeras.models.MaskGITPrior(128, (7, 7), num_classes=10)
    prior.compile(optimizer=keras.optimizers.AdamW(3e-4))
    prior.fit(grids, y_train, epochs=10, batch_size=128)
    codes = prior.sample(16, labels=np.arange(16) % 10, num_steps=8, seed=0)
    ```

    Reference:
        Chang et al., "MaskGIT: Masked Generative Image Transformer", 2022.
    """

    causal = False
    extra_tokens = 1
    nll_is_likelihood = False
    sampling_options = (
        "num_steps",
        "temperature",
        "top_k",
        "top_p",
        "guidance_scale",
        "choice_temperature",
    )

    def __init__(self, num_embeddings, grid_shape, num_classes=None, **kwargs):
        if kwargs.get("image_size") is not None:
            raise ValueError(
                "MaskGITPrior's masked loss is not a likelihood: `image_size` (for "
                f"bits_per_dim) is not accepted. Received: image_size={kwargs['image_size']!r}"
            )
        kwargs.pop("image_size", None)
        super().__init__(num_embeddings, grid_shape, num_classes, **kwargs)
        self.mask_seed = keras.random.SeedGenerator(1, name="mask_seed")

    @property
    def sequence_length(self):
        """The class token, the condition codes, then the codes."""
        return 1 + self.prefix_length + self.length

    @property
    def mask_token(self):
        """The code value that marks a masked position."""
        return self.num_embeddings

    @staticmethod
    def mask_schedule(length, num_steps):
        """Codes still masked after each of `num_steps` decoding steps.

        `floor(length * cos(pi / 2 * (t + 1) / num_steps))`, kept strictly
        decreasing (every step reveals at least one code) and leaving at
        least one code per remaining step; the last entry is 0.
        """
        length = validation.positive_int("length", length)
        if (
            isinstance(num_steps, bool)
            or not isinstance(num_steps, int)
            or not (1 <= num_steps <= length)
        ):
            raise ValueError(
                f"`num_steps` must be an integer in [1, {length}] (the number of codes). "
                f"Received: num_steps={num_steps!r}"
            )
        masked, previous = [], length
        for step in range(num_steps):
            planned = math.floor(length * math.cos(math.pi / 2 * (step + 1) / num_steps))
            previous = min(max(planned, num_steps - 1 - step), previous - 1)
            masked.append(previous)
        return tuple(masked)

    def masked_logits(self, tokens, start_labels, condition=None, training=False):
        """float32 logits `(batch, L, K)` of raster-flattened `tokens`
        `(batch, L)` (codes, or `mask_token`) given class-token indices
        `(batch,)` and flattened condition codes `(batch, hc * wc)` (None
        without a condition grid)."""
        x = ops.concatenate(
            [self.prefix(start_labels, condition), self.embed_codes(tokens)], axis=1
        )
        return self._head(self._blocks(x, training=training))[:, 1 + self.prefix_length :]

    def _logits(self, indices, labels, condition, training=False):
        batch = ops.shape(indices)[0]
        start_labels = self._start_labels(labels, batch, training)
        logits = self.masked_logits(
            self._flat(indices), start_labels, self._flat(condition), training
        )
        return ops.reshape(logits, (batch, *self.code_shape, self.num_embeddings))

    def random_mask(self, batch):
        """Bool `(batch, L)`: each row masks `ceil(cos(pi / 2 * r) * L)`
        random positions (at least one), `r ~ U(0, 1)` per row."""
        ratios = ops.cos(math.pi / 2 * keras.random.uniform((batch, 1), seed=self.mask_seed))
        counts = ops.clip(ops.ceil(ratios * self.length), 1, self.length)
        scores = keras.random.uniform((batch, self.length), seed=self.mask_seed)
        # The `count` smallest scores of a row are masked.
        threshold = ops.take_along_axis(
            ops.sort(scores, axis=-1), ops.cast(counts, "int32") - 1, axis=-1
        )
        return scores <= threshold

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        indices, labels, condition = self._split_inputs(x, y)
        self.check_inputs(indices, labels, condition)
        self._build_if_needed()
        batch = ops.shape(indices)[0]
        flat = self._flat(indices)
        masked = self.random_mask(batch)
        tokens = ops.where(masked, self.mask_token, flat)
        start_labels = self._start_labels(labels, batch, training)
        logits = self.masked_logits(tokens, start_labels, self._flat(condition), training)
        per_code = keras.losses.sparse_categorical_crossentropy(flat, logits, from_logits=True)
        weights = ops.cast(masked, "float32")
        return {"nll": ops.sum(per_code * weights) / ops.sum(weights)}, {}

    # -- sampling --------------------------------------------------------------

    def sample(
        self,
        num,
        labels=None,
        condition=None,
        num_steps=8,
        temperature=1.0,
        top_k=None,
        top_p=None,
        guidance_scale=None,
        choice_temperature=4.5,
        seed=None,
        return_history=False,
    ):
        """Draws `num` code grids by iterative parallel decoding.

        Args:
            num: number of grids to draw.
            labels: int array `(num,)` in `[0, num_classes)` for a
                class-conditional prior, or None for its unconditional
                distribution; must be None for an unconditional prior.
            condition: int condition grids `(num, hc, wc)`; required iff the
                prior has a condition grid.
            num_steps: decoding steps, in `[1, L]` (`L = h * w * levels`
                codes).
            temperature: positive float for the code draws.
            top_k: None, or an int in `[1, num_embeddings]`.
            top_p: None, or a float in `(0, 1]`: nucleus sampling.
            guidance_scale: None, or a non-negative float s of
                classifier-free guidance (see `TransformerPrior.sample`).
            choice_temperature: non-negative scale of the Gumbel noise added
                to the confidences at the first step, annealed linearly to 0.
            seed: None or a non-negative int; the same seed gives the same
                grids on the same backend.
            return_history: also return the grids after each step.

        Returns:
            int32 tensor `(num, h, w)` (`(num, h, w, depth)` with `depth`) of
            codes in `[0, num_embeddings)`; with `return_history`, also int32
            `(num_steps, num, ...)`, -1 where a code is still masked after
            that step.
        """
        num, start_labels, condition, temperature, top_k, top_p, guidance_scale, seed = (
            self._sampling_arguments(
                num, labels, condition, temperature, top_k, top_p, guidance_scale, seed
            )
        )
        schedule = self.mask_schedule(self.length, num_steps)
        choice_temperature = validation.float_in_range(
            "choice_temperature", choice_temperature, 0.0, math.inf, high_inclusive=False
        )
        generator = keras.random.SeedGenerator(seed)
        # Uniforms in (0, 1]: a draw of exactly 0 could select a code of zero
        # probability; those of the Gumbel noise in (0, 1), away from both ends.
        uniforms = 1.0 - keras.random.uniform(
            (num_steps, num * self.length), dtype="float32", seed=generator
        )
        choice_uniforms = keras.random.uniform(
            (num_steps, num, self.length), minval=1e-10, maxval=1.0 - 1e-7, seed=generator
        )
        choice_temperature = ops.convert_to_tensor(choice_temperature, dtype="float32")
        arguments = (start_labels, condition, uniforms, choice_uniforms, temperature)
        static = {"top_k": top_k, "top_p": top_p, "schedule": schedule}
        grids, history = self._run_compiled(
            (*arguments, choice_temperature, guidance_scale), static
        )
        grids = ops.reshape(grids, (num, *self.code_shape))
        if return_history:
            return grids, ops.reshape(history, (num_steps, num, *self.code_shape))
        return grids

    def _sampling_loop(
        self,
        start_labels,
        condition,
        uniforms,
        choice_uniforms,
        temperature,
        choice_temperature,
        guidance_scale,
        **static,
    ):
        """`(codes, history)` after the `len(schedule)` decoding steps."""
        top_k, top_p, schedule = static["top_k"], static["top_p"], static["schedule"]
        num = ops.shape(start_labels)[0]
        null_labels = ops.full((num,), self.null_class, dtype="int32")
        starts = (start_labels,) if guidance_scale is None else (start_labels, null_labels)
        tokens = ops.full((num, self.length), self.mask_token, dtype="int32")
        history = []
        # A Python loop: the steps are few and each keeps a different static
        # number of codes.
        for step, still_masked in enumerate(schedule):
            logits = [self.masked_logits(tokens, start, condition) for start in starts]
            logits = self._guided(logits, guidance_scale)
            drawn = self._draw(
                ops.reshape(logits, (-1, self.num_embeddings)),
                uniforms[step],
                temperature,
                top_k,
                top_p,
            )
            drawn = ops.reshape(drawn, (num, self.length))
            log_probs = ops.log_softmax(logits / temperature, axis=-1)
            confidence = ops.take_along_axis(log_probs, drawn[..., None], axis=-1)[..., 0]
            gumbel = -ops.log(-ops.log(choice_uniforms[step]))
            annealing = choice_temperature * (1.0 - (step + 1) / len(schedule))
            known = tokens != self.mask_token
            # Known codes rank first (they stay), then the most confident draws.
            confidence = ops.where(known, 1e30, confidence + annealing * gumbel)
            _, kept = ops.top_k(confidence, self.length - still_masked)
            revealed = ops.sum(ops.one_hot(kept, self.length, dtype="int32"), axis=1) > 0
            tokens = ops.where(ops.logical_and(revealed, ops.logical_not(known)), drawn, tokens)
            history.append(ops.where(tokens == self.mask_token, -1, tokens))
        return tokens, ops.stack(history)
