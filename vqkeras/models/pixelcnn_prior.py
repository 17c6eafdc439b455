import math

import keras
import numpy as np
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.gated_pixelcnn_block import GatedPixelCNNBlock
from vqkeras.models.loss_terms_model import LossTermsModel


@keras.saving.register_keras_serializable(package="vqkeras")
class PixelCNNPrior(LossTermsModel):
    """Gated PixelCNN prior over the integer code grids of a VQ model.

    Models `p(codes) = prod_p p(code_p | codes before p in raster order)`,
    optionally given a class label. The codes are embedded, go through a type
    "A" `GatedPixelCNNBlock` then type "B" blocks, and a 1x1 convolution head
    gives `num_embeddings` logits per position.

    Training: `compile(optimizer)` then `fit` on code grids, e.g. those of
    `VQVAE.encode_indices`: `fit(grids)` for an unconditional prior,
    `fit(grids, labels)` (or a dataset of `(grids, labels)`) for a
    conditional one; an unconditional prior ignores labels in the data. The
    loss term `nll` is the mean cross-entropy of the codes in nats per code.
    With `image_size`, the logs also show `bits_per_dim`: the NLL of a whole
    grid in bits divided by the number of pixel values of the image the grid
    stands for (`H * W * C`), as in the VQ-VAE paper.

    Sampling: `sample(num, labels, temperature, top_k, seed)` draws the codes
    one position at a time in raster order, in one compiled loop where the
    backend allows it (a `jax.jit`ted `fori_loop` on JAX, a `tf.function` on
    TensorFlow; an eager no-grad loop on PyTorch).

    Args:
        num_embeddings: number of codes K of the VQ model.
        grid_shape: `(h, w)` of the code grids.
        num_classes: number of classes for class conditioning (labels in
            `[0, num_classes)`), or None for an unconditional prior.
        filters: channels of the gated blocks.
        num_blocks: number of gated blocks (the first of type "A"). The
            receptive field of position (i, j) spans rows
            `i - num_blocks * (kernel_size // 2) - 1` to i and columns
            `j -+ num_blocks * (kernel_size // 2)`; make it cover the grid.
        kernel_size: odd kernel size of the gated blocks.
        embedding_dim: size of the code embedding.
        image_size: `(H, W, C)` of the images the codes come from, for
            `bits_per_dim`; None to log no `bits_per_dim`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: int code grids `(batch, h, w)` in `[0, num_embeddings)`, or
            for a conditional prior a pair `(grids, labels)` with int labels
            `(batch,)`.
        training: unused (no dropout or normalization); kept for Keras.

    Returns:
        float32 logits `(batch, h, w, num_embeddings)`.

    Example:

    ```python
    grids = vqvae.encode_indices(x_train)          # int32 (N, 7, 7)
    prior = vqkeras.models.PixelCNNPrior(
        num_embeddings=128, grid_shape=(7, 7), num_classes=10, image_size=(28, 28, 1)
    )
    prior.compile(optimizer=keras.optimizers.Adam(1e-3))
    prior.fit(grids, y_train, epochs=10, batch_size=128)
    codes = prior.sample(16, labels=np.arange(16) % 10, seed=0)  # int32 (16, 7, 7)
    images = vqvae.decode_indices(codes)                          # (16, 28, 28, 1)
    ```

    Reference:
        van den Oord et al., "Conditional Image Generation with PixelCNN
        Decoders", 2016; van den Oord et al., "Neural Discrete Representation
        Learning", 2017.
    """

    def __init__(
        self,
        num_embeddings,
        grid_shape,
        num_classes=None,
        filters=64,
        num_blocks=7,
        kernel_size=3,
        embedding_dim=64,
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
        self.filters = validation.positive_int("filters", filters)
        self.num_blocks = validation.positive_int("num_blocks", num_blocks)
        self.kernel_size = validation.positive_int("kernel_size", kernel_size)
        self.embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        self.image_size = None
        if image_size is not None:
            self.image_size = validation.positive_int_tuple("image_size", image_size)
            if len(self.image_size) != 3:
                raise ValueError(
                    f"`image_size` must be (height, width, channels). Received: {image_size!r}"
                )
        self.code_embedding = layers.Embedding(
            self.num_embeddings, self.embedding_dim, name="code_embedding", dtype=self.dtype_policy
        )
        self.blocks = [
            GatedPixelCNNBlock(
                "A" if index == 0 else "B",
                self.filters,
                self.kernel_size,
                num_classes=self.num_classes,
                name=f"gated_block_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(self.num_blocks)
        ]
        self.head_hidden = layers.Conv2D(
            self.filters, 1, activation="relu", name="head_hidden", dtype=self.dtype_policy
        )
        self.head_logits = layers.Conv2D(
            self.num_embeddings, 1, name="head_logits", dtype=self.dtype_policy
        )
        self.bits_per_dim = keras.metrics.Mean(name="bits_per_dim")
        self._compiled_sampler = None

    @property
    def conditional(self):
        return self.num_classes is not None

    def build(self, input_shape=None):
        # The layers' shapes follow from the configuration; layers already
        # built (e.g. when deserialized with their build config) are kept.
        height, width = self.grid_shape
        embedded = (None, height, width, self.embedding_dim)
        features = (None, height, width, self.filters)
        sublayers = [(self.code_embedding, (None, height, width))]
        sublayers += [
            (block, (embedded, embedded) if index == 0 else (features, features))
            for index, block in enumerate(self.blocks)
        ]
        sublayers += [(self.head_hidden, features), (self.head_logits, features)]
        for layer, shape in sublayers:
            if not layer.built:
                layer.build(shape)

    def _build_if_needed(self):
        if not self.built:
            self.build((None, *self.grid_shape))

    # -- input checks -----------------------------------------------------------

    def check_inputs(self, indices, labels=None):
        """Raises a clear error unless `indices` (and `labels`) suit this prior."""
        shape = tuple(indices.shape)
        if len(shape) != 3 or any(
            size is not None and size != expected
            for size, expected in zip(shape[1:], self.grid_shape)
        ):
            raise ValueError(
                f"Expected code grids of shape (batch, {self.grid_shape[0]}, "
                f"{self.grid_shape[1]}). Received shape={shape}."
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
        """`(indices, labels)` from `x` = grids or (grids, labels), and `y`."""
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise ValueError(
                    "Expected code grids or a pair (grids, labels). "
                    f"Received a sequence of {len(x)} inputs."
                )
            return x[0], x[1]
        return x, y if self.conditional else None

    # -- forward ---------------------------------------------------------------

    def logits_from_embeddings(self, embedded, labels=None):
        """float32 logits `(batch, h, w, K)` from embedded codes `(batch, h, w,
        embedding_dim)`: the causal stack without the embedding lookup (the
        logits at p depend only on the embeddings before p in raster order)."""
        pre_activations = self._vertical_pre_activations(embedded, labels)
        return self._horizontal_logits(embedded, pre_activations, labels)

    def _vertical_pre_activations(self, embedded, labels):
        """The vertical pre-activation of every block; row i depends on rows < i."""
        pre_activations = []
        vertical = embedded
        for block in self.blocks:
            vertical, pre_activation = block.vertical_stack(vertical, labels)
            pre_activations.append(pre_activation)
        return pre_activations

    def _horizontal_logits(self, embedded, pre_activations, labels):
        """Logits of the rows of `embedded` given the vertical pre-activations
        of the same rows (all rows, or a single one)."""
        horizontal = embedded
        for block, pre_activation in zip(self.blocks, pre_activations):
            horizontal = block.horizontal_stack(horizontal, pre_activation, labels)
        logits = self.head_logits(self.head_hidden(ops.relu(horizontal)))
        return ops.cast(logits, "float32")

    def _logits(self, indices, labels):
        return self.logits_from_embeddings(self.code_embedding(indices), labels)

    def call(self, inputs, training=None):
        indices, labels = self._split_inputs(inputs)
        self.check_inputs(indices, labels)
        return self._logits(indices, labels)

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        indices, labels = self._split_inputs(x, y)
        self.check_inputs(indices, labels)
        self._build_if_needed()
        logits = self._logits(indices, labels)
        per_code = keras.losses.sparse_categorical_crossentropy(indices, logits, from_logits=True)
        nll_per_grid = ops.sum(ops.reshape(per_code, (ops.shape(per_code)[0], -1)), axis=-1)
        height, width = self.grid_shape
        terms = {"nll": ops.mean(nll_per_grid) / (height * width)}
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
        if isinstance(x, (tuple, list)) or isinstance(x, np.ndarray):
            indices, labels = self._split_inputs(x, y)
            if isinstance(indices, np.ndarray) and (
                labels is None or isinstance(labels, np.ndarray)
            ):
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

    # -- sampling --------------------------------------------------------------

    def sample(self, num, labels=None, temperature=1.0, top_k=None, seed=None):
        """Draws `num` code grids, position by position in raster order.

        Each code is drawn from `softmax(logits / temperature)`, restricted to
        the `top_k` most likely codes when `top_k` is set, by inverting the
        cumulative distribution at a uniform number. The `h * w` uniform
        numbers per grid come from `keras.random.uniform` with `seed`, so the
        same seed gives the same grids on the same backend.

        Args:
            num: number of grids to draw.
            labels: int array `(num,)` in `[0, num_classes)`; required iff the
                prior is class-conditional.
            temperature: positive float; below 1 sharpens the distribution.
            top_k: None, or an int in `[1, num_embeddings]`: only the codes
                whose logit is at least the k-th largest can be drawn (codes
                tied with it included).
            seed: None (draws from Keras' global seed generator) or a
                non-negative int.

        Returns:
            int32 tensor `(num, h, w)` with codes in `[0, num_embeddings)`,
            ready for `VQVAE.decode_indices`.
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
        if seed is not None:
            seed = validation.non_negative_int("seed", seed)
        if self.conditional and labels is None:
            raise ValueError(
                f"This prior is class-conditional (num_classes={self.num_classes}): "
                f"`labels` of shape ({num},) are required."
            )
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
            labels = ops.convert_to_tensor(labels, dtype="int32")
        self._build_if_needed()
        height, width = self.grid_shape
        # Uniforms in (0, 1]: a draw of exactly 0 could select a code of zero
        # probability.
        uniforms = 1.0 - keras.random.uniform((height * width, num), dtype="float32", seed=seed)
        grids = ops.zeros((num, height, width), dtype="int32")
        temperature = ops.convert_to_tensor(temperature, dtype="float32")
        return self._run_sampling_loop(grids, labels, uniforms, temperature, top_k)

    def _draw(self, logits, uniforms, temperature, top_k):
        """Codes `(num,)` drawn from `logits` `(num, K)` by inverting the CDF at `uniforms`."""
        logits = logits / temperature
        if top_k is not None and top_k < self.num_embeddings:
            kth_largest = ops.top_k(logits, top_k)[0][:, -1:]
            logits = ops.where(logits < kth_largest, -np.inf, logits)
        cdf = ops.cumsum(ops.softmax(logits, axis=-1), axis=-1)
        # The first code whose cumulative probability reaches u (scaled by the
        # total, which float rounding keeps only close to 1).
        codes = ops.sum(ops.cast(cdf < uniforms[:, None] * cdf[:, -1:], "int32"), axis=-1)
        return ops.minimum(codes, self.num_embeddings - 1)

    def _sampling_loop(self, grids, labels, uniforms, temperature, top_k):
        """Draws the codes of `grids` in raster order.

        Row i of the vertical stacks depends on rows < i only, so it is computed
        once per row; per position, only the horizontal stacks and the head run,
        on the current row: about `w` times less work than a full forward pass
        per position.
        """
        height, width = self.grid_shape
        num = ops.shape(grids)[0]
        flat_positions = ops.arange(height * width)[None, :]

        def row_body(row, grids):
            pre_activations = self._vertical_pre_activations(self.code_embedding(grids), labels)
            row_pre_activations = [ops.take(pre, row, axis=1)[:, None] for pre in pre_activations]

            def column_body(column, grids):
                codes_row = ops.take(grids, row, axis=1)[:, None]
                logits = self._horizontal_logits(
                    self.code_embedding(codes_row), row_pre_activations, labels
                )
                position = row * width + column
                codes = self._draw(
                    ops.take(logits[:, 0], column, axis=1),
                    ops.take(uniforms, position, axis=0),
                    temperature,
                    top_k,
                )
                flat = ops.reshape(grids, (num, height * width))
                flat = ops.where(flat_positions == position, codes[:, None], flat)
                return ops.reshape(flat, (num, height, width))

            return ops.fori_loop(0, width, column_body, grids)

        return ops.fori_loop(0, height, row_body, grids)

    def _run_sampling_loop(self, grids, labels, uniforms, temperature, top_k):
        backend = keras.config.backend()
        if backend == "jax":
            import jax

            if self._compiled_sampler is None:

                def stateless_loop(values, grids, labels, uniforms, temperature, top_k):
                    mapping = list(zip(self.variables, values))
                    with keras.StatelessScope(state_mapping=mapping):
                        return self._sampling_loop(grids, labels, uniforms, temperature, top_k)

                self._compiled_sampler = jax.jit(stateless_loop, static_argnames=("top_k",))
            values = [variable.value for variable in self.variables]
            return self._compiled_sampler(values, grids, labels, uniforms, temperature, top_k=top_k)
        if backend == "tensorflow":
            import tensorflow as tf

            if self._compiled_sampler is None:
                self._compiled_sampler = tf.function(self._sampling_loop)
            return self._compiled_sampler(grids, labels, uniforms, temperature, top_k)
        if backend == "torch":
            import torch

            with torch.no_grad():
                return self._sampling_loop(grids, labels, uniforms, temperature, top_k)
        return self._sampling_loop(grids, labels, uniforms, temperature, top_k)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "grid_shape": self.grid_shape,
                "num_classes": self.num_classes,
                "filters": self.filters,
                "num_blocks": self.num_blocks,
                "kernel_size": self.kernel_size,
                "embedding_dim": self.embedding_dim,
                "image_size": self.image_size,
            }
        )
        return config
