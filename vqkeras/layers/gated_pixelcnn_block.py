import keras
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.masked_conv2d import MASK_TYPES, MaskedConv2D


def pointwise(conv, x):
    """A 1x1 `Conv2D` layer's output for `x` `(..., channels)`, computed as a
    matrix product over the last axis: the same arithmetic, without the fixed
    cost of a convolution call, which dominates on the one-position inputs of
    a sampling step (about 0.5 ms a call on PyTorch's oneDNN path)."""
    kernel = ops.reshape(ops.cast(conv.kernel, x.dtype), (-1, conv.filters))
    outputs = ops.matmul(ops.reshape(x, (-1, ops.shape(x)[-1])), kernel)
    if conv.use_bias:
        outputs = outputs + ops.cast(conv.bias, x.dtype)
    outputs = ops.reshape(outputs, (*ops.shape(x)[:-1], conv.filters))
    return conv.activation(outputs)


@keras.saving.register_keras_serializable(package="vqkeras")
class GatedPixelCNNBlock(layers.Layer):
    """Gated PixelCNN block: a vertical and a horizontal stack, no blind spot.

    The vertical stack sees every column of the rows above the current one
    (never the current row or below); the horizontal stack sees the current
    row left of the current pixel (type "A") or up to it (type "B"). Together
    they cover the whole causal past, without the blind spot of a stack of
    masked 3x3 convolutions. Per stack, a convolution gives `2 * filters`
    features that are gated as `tanh(a) * sigmoid(b)`; the vertical
    pre-activations feed the horizontal stack through a 1x1 convolution; the
    horizontal stack ends with a 1x1 convolution and, in type "B" blocks, a
    residual connection. Type "A" blocks have no residual, since their input
    still holds the current pixel. With `num_classes`, a learned per-class
    bias (an `Embedding` of `num_classes` to `2 * filters`) is added to the
    pre-activations of both stacks. With `condition_channels`, a spatial
    condition (features of the same height and width, e.g. an upsampled
    coarser code grid that is known before sampling) adds a 1x1 convolution
    of itself to both pre-activations, the location-dependent conditioning
    of the Gated PixelCNN paper: the condition may be seen everywhere, so it
    does not break the causality of the stacks.

    Use type "A" for the first block (its inputs are the embedded pixels
    themselves) and type "B" for the blocks after it.

    Args:
        mask_type: "A" (first block: excludes the current pixel) or "B".
        filters: channels of both output stacks. In a type "B" block the
            horizontal input must have `filters` channels (the residual).
        kernel_size: odd int: the vertical stack sees `kernel_size // 2 + 1`
            rows by `kernel_size` columns, the horizontal stack
            `kernel_size // 2 + 1` columns of the current row.
        num_classes: number of classes for the class-conditional bias, or
            None for an unconditional block.
        condition_channels: channels of the spatial condition, or None for
            a block without one.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: pair `(vertical, horizontal)` of tensors
            `(batch, height, width, channels)`. For the first block both are
            the embedded input.
        labels: int tensor `(batch,)` in `[0, num_classes)`; required iff
            `num_classes` is set.
        condition: tensor `(batch, height, width, condition_channels)`;
            required iff `condition_channels` is set.

    Returns:
        Pair `(vertical, horizontal)` of tensors `(batch, height, width,
        filters)`. The horizontal output at (i, j) depends only on input
        pixels before (i, j) in raster order (type "A") or up to and
        including it (type "B").

    Example:

    ```python
    x = keras.random.normal((8, 7, 7, 32))
    v, h = vqkeras.layers.GatedPixelCNNBlock("A", filters=64)((x, x))
    v, h = vqkeras.layers.GatedPixelCNNBlock("B", filters=64)((v, h))
    ```

    Reference:
        van den Oord et al., "Conditional Image Generation with PixelCNN
        Decoders", 2016.
    """

    def __init__(
        self, mask_type, filters, kernel_size=3, num_classes=None, condition_channels=None, **kwargs
    ):
        super().__init__(**kwargs)
        if mask_type not in MASK_TYPES:
            raise ValueError(f'`mask_type` must be "A" or "B". Received: mask_type={mask_type!r}')
        self.mask_type = mask_type
        self.filters = validation.positive_int("filters", filters)
        self.kernel_size = validation.positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd. Received: kernel_size={kernel_size!r}")
        self.num_classes = (
            None if num_classes is None else validation.positive_int("num_classes", num_classes)
        )
        self.condition_channels = (
            None
            if condition_channels is None
            else validation.positive_int("condition_channels", condition_channels)
        )
        half = self.kernel_size // 2
        self.vertical_conv = layers.Conv2D(
            2 * self.filters,
            (half + 1, self.kernel_size),
            name="vertical_conv",
            dtype=self.dtype_policy,
        )
        self.horizontal_conv = MaskedConv2D(
            mask_type,
            2 * self.filters,
            (1, self.kernel_size),
            name="horizontal_conv",
            dtype=self.dtype_policy,
        )
        self.vertical_to_horizontal = layers.Conv2D(
            2 * self.filters, 1, name="vertical_to_horizontal", dtype=self.dtype_policy
        )
        self.horizontal_output = layers.Conv2D(
            self.filters, 1, name="horizontal_output", dtype=self.dtype_policy
        )
        self.class_embedding = None
        if self.num_classes is not None:
            self.class_embedding = layers.Embedding(
                self.num_classes, 2 * self.filters, name="class_embedding", dtype=self.dtype_policy
            )
        self.condition_projection = None
        if self.condition_channels is not None:
            self.condition_projection = layers.Conv2D(
                2 * self.filters, 1, name="condition_projection", dtype=self.dtype_policy
            )

    def _split_shapes(self, input_shape):
        shapes = tuple(tuple(shape) for shape in input_shape)
        if len(shapes) != 2 or any(len(shape) != 4 for shape in shapes):
            raise ValueError(
                "GatedPixelCNNBlock expects a pair (vertical, horizontal) of tensors of shape "
                f"(batch, height, width, channels). Received shapes={input_shape!r}"
            )
        return shapes

    def build(self, input_shape):
        vertical_shape, horizontal_shape = self._split_shapes(input_shape)
        if self.mask_type == "B" and horizontal_shape[-1] != self.filters:
            raise ValueError(
                f"A type 'B' block adds its input to its output, so the horizontal input needs "
                f"filters={self.filters} channels. Received shape={horizontal_shape}."
            )
        # The vertical convolution runs on a padded input of another size.
        self.vertical_conv.build((vertical_shape[0], None, None, vertical_shape[-1]))
        self.horizontal_conv.build(horizontal_shape)
        pre_activation_shape = tuple(horizontal_shape[:-1]) + (2 * self.filters,)
        self.vertical_to_horizontal.build(pre_activation_shape)
        self.horizontal_output.build(tuple(horizontal_shape[:-1]) + (self.filters,))
        if self.class_embedding is not None:
            self.class_embedding.build((None,))
        if self.condition_projection is not None:
            self.condition_projection.build((None, None, None, self.condition_channels))

    def _gate(self, x):
        return ops.tanh(x[..., : self.filters]) * ops.sigmoid(x[..., self.filters :])

    def _conditioning_bias(self, labels, condition):
        """The class bias plus the projected spatial condition (or 0.0)."""
        if (labels is None) != (self.class_embedding is None):
            raise ValueError(
                f"This block has num_classes={self.num_classes}: labels are "
                f"{'required' if labels is None else 'not accepted'}."
            )
        if (condition is None) != (self.condition_projection is None):
            raise ValueError(
                f"This block has condition_channels={self.condition_channels}: a condition is "
                f"{'required' if condition is None else 'not accepted'}."
            )
        bias = 0.0
        if labels is not None:
            bias = self.class_embedding(labels)[:, None, None, :]
        if condition is not None:
            condition = ops.convert_to_tensor(condition, dtype=self.compute_dtype)
            bias = bias + self.condition_projection(condition)
        return bias

    def vertical_padding(self):
        """`(rows on top, columns on each side)` of zeros that `vertical_stack`
        pads its input with. Output row i of the stack sees rows i to
        `i + kernel_size // 2` of the padded input, in both block types."""
        half = self.kernel_size // 2
        # Type A: one more row on top (and the last output row dropped)
        # shifts the stack down, so that row i sees input rows < i only.
        # Type B inputs come from a vertical stack that is already shifted.
        return half + (self.mask_type == "A"), half

    def vertical_stack(self, vertical, labels=None, condition=None):
        """The vertical half of the block.

        Returns `(output, pre_activation)`: the gated output `(batch, height,
        width, filters)` for the next block's vertical stack, and the
        pre-activation `(batch, height, width, 2 * filters)` (without the class
        bias and the condition) that `horizontal_stack` takes. Row i of both depends only on
        rows < i of the input of the first block. The vertical stack never
        reads the horizontal one, so a sampler can compute it once per row
        (`vertical_stack_row`).
        """
        vertical = ops.convert_to_tensor(vertical, dtype=self.compute_dtype)
        top, side = self.vertical_padding()
        padded = ops.pad(vertical, ((0, 0), (top, 0), (side, side), (0, 0)))
        pre_activation = self.vertical_conv(padded)
        if self.mask_type == "A":
            pre_activation = pre_activation[:, :-1]
        bias = self._conditioning_bias(labels, condition)
        return self._gate(pre_activation + bias), pre_activation

    def vertical_stack_row(self, window, labels=None, condition=None):
        """One row i of `vertical_stack`, from the rows of the padded input it
        sees (`window`: rows i to `i + kernel_size // 2` of the input padded
        as `vertical_padding` says, `(batch, kernel_size // 2 + 1, width +
        2 * (kernel_size // 2), channels)`) and that row of the condition.
        Returns `(output, pre_activation)` of that row, `(batch, 1, width, ...)`:
        the same convolution on fewer rows, so a sampler that computes one row
        at a time does a grid's vertical work once instead of once per row."""
        window = ops.convert_to_tensor(window, dtype=self.compute_dtype)
        pre_activation = self._vertical_conv_row(window)
        bias = self._conditioning_bias(labels, condition)
        return self._gate(pre_activation + bias), pre_activation

    def _vertical_conv_row(self, window):
        """`vertical_conv` on a window of its kernel's height, `(batch, 1,
        width, 2 * filters)`, as one matrix product of the window's patches
        with the kernel. The same arithmetic as the convolution call, without
        PyTorch's layout conversions around it (about 40% of a sampling
        step's time there)."""
        conv = self.vertical_conv
        _, rows, padded_width, channels = window.shape
        width = padded_width - self.kernel_size + 1
        # Output column j sees input columns j to j + kernel_size - 1: its
        # patch, ordered (column, row, channel), meets the kernel's rows in
        # that order. (Slices and one stack: a gather is slower on PyTorch.)
        by_column = ops.transpose(window, (0, 2, 1, 3))
        shifted = [by_column[:, shift : shift + width] for shift in range(self.kernel_size)]
        patches = ops.reshape(
            ops.stack(shifted, axis=2), (-1, 1, width, self.kernel_size * rows * channels)
        )
        kernel = ops.transpose(ops.cast(conv.kernel, self.compute_dtype), (1, 0, 2, 3))
        outputs = ops.matmul(patches, ops.reshape(kernel, (-1, conv.filters)))
        if conv.use_bias:
            outputs = outputs + ops.cast(conv.bias, self.compute_dtype)
        return outputs

    def horizontal_stack(self, horizontal, vertical_pre_activation, labels=None, condition=None):
        """The horizontal half of the block: output `(batch, height, width,
        filters)` from the horizontal input and the vertical pre-activation of
        the same rows (from `vertical_stack`). It mixes pixels within a row
        only, so it also runs on a single row `(batch, 1, width, channels)`
        (with that row of the condition)."""
        horizontal = ops.convert_to_tensor(horizontal, dtype=self.compute_dtype)
        pre_activation = (
            self.horizontal_conv(horizontal)
            + self.vertical_to_horizontal(vertical_pre_activation)
            + self._conditioning_bias(labels, condition)
        )
        output = self.horizontal_output(self._gate(pre_activation))
        if self.mask_type == "B":
            output = output + horizontal
        return output

    def horizontal_row_terms(self, vertical_pre_activation, labels=None, condition=None):
        """The part of the horizontal pre-activation of a row `(batch, 1,
        width, 2 * filters)` that does not depend on the horizontal input:
        the vertical stack's contribution (from `vertical_stack_row`), the
        class and condition biases, and the horizontal convolution's bias.
        Computed once per row, on the whole row, for
        `horizontal_stack_position`."""
        terms = pointwise(self.vertical_to_horizontal, vertical_pre_activation)
        terms = terms + self._conditioning_bias(labels, condition)
        if self.horizontal_conv.use_bias:
            terms = terms + ops.cast(self.horizontal_conv.bias, self.compute_dtype)
        return terms

    def position_weights(self):
        """The weights of `horizontal_stack_position` as matrices, prepared
        once per sampling call: the horizontal convolution at one position
        `((kernel_size // 2 + 1) * channels, 2 * filters)` (the masked
        kernel's columns up to the center, those right of it being zero,
        in the order of a flattened `(columns, channels)` window), and the
        output 1x1 convolution's kernel and bias."""
        conv, output = self.horizontal_conv, self.horizontal_output
        kernel = ops.cast(conv.kernel, self.compute_dtype) * conv.kernel_mask()
        kernel = ops.reshape(kernel[:, : self.kernel_size // 2 + 1], (-1, conv.filters))
        output_kernel = ops.reshape(ops.cast(output.kernel, self.compute_dtype), (-1, self.filters))
        output_bias = ops.cast(output.bias, self.compute_dtype) if output.use_bias else 0.0
        return kernel, output_kernel, output_bias

    def horizontal_stack_position(self, window, row_terms, weights):
        """`horizontal_stack` at one position j of a row: the output `(batch,
        filters)` from the horizontal input at columns `j - kernel_size // 2`
        to j flattened column by column (`window`, `(batch, (kernel_size //
        2 + 1) * channels)`, zeros left of the row), the
        `horizontal_row_terms` at j `(batch, 2 * filters)` and
        `position_weights()`. Matrix products only: on one position a
        convolution call costs more than its arithmetic. (`@` rather than
        `ops.matmul`: the operands are already tensors of the compute dtype,
        and on PyTorch Keras's dispatch costs more than the product.)"""
        kernel, output_kernel, output_bias = weights
        window = ops.convert_to_tensor(window, dtype=self.compute_dtype)
        pre_activation = window @ kernel + row_terms
        output = self._gate(pre_activation) @ output_kernel + output_bias
        if self.mask_type == "B":
            output = output + window[:, -self.filters :]
        return output

    def call(self, inputs, labels=None, condition=None, training=None):
        vertical, horizontal = inputs
        vertical, pre_activation = self.vertical_stack(vertical, labels, condition)
        return vertical, self.horizontal_stack(horizontal, pre_activation, labels, condition)

    def compute_output_shape(self, input_shape):
        vertical_shape, horizontal_shape = self._split_shapes(input_shape)
        return (
            tuple(vertical_shape[:-1]) + (self.filters,),
            tuple(horizontal_shape[:-1]) + (self.filters,),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mask_type": self.mask_type,
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_classes": self.num_classes,
                "condition_channels": self.condition_channels,
            }
        )
        return config
