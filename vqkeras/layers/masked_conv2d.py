import keras
import numpy as np
from keras import layers, ops

MASK_TYPES = ("A", "B")


@keras.saving.register_keras_serializable(package="vqkeras")
class MaskedConv2D(layers.Conv2D):
    """A `Conv2D` whose kernel is masked so that each output sees only the
    pixels before it in raster order (PixelCNN).

    The kernel is multiplied by a fixed 0/1 mask inside the convolution op, so
    the masked weights get zero gradient and bias and activation stay those of
    `Conv2D`. Centered on the output pixel, the mask keeps every row above the
    center and, in the center row, the columns left of the center: mask type
    "A" excludes the center itself (for the first layer, which must not see
    the pixel it predicts), type "B" includes it (for later layers, whose
    center features already exclude that pixel). Channels are not split into
    groups: the input is one categorical value per position (e.g. a code).

    Args:
        mask_type: "A" (excludes the center pixel) or "B" (includes it).
        filters: number of output channels.
        kernel_size: int or pair of odd ints.
        padding: only "same" keeps outputs aligned with the pixels they
            predict, so it is the only one accepted.
        **kwargs: other `keras.layers.Conv2D` arguments (`activation`,
            `use_bias`, `kernel_initializer`, `dilation_rate`, ...). Strides
            must stay 1 and `data_format` "channels_last".

    Call arguments:
        inputs: tensor `(batch, height, width, channels)`.

    Returns:
        Tensor `(batch, height, width, filters)`; output (i, j) depends only
        on inputs (i', j') with i' < i, or i' == i and j' < j (type "A") or
        j' <= j (type "B").

    Example:

    ```python
    conv = vqkeras.layers.MaskedConv2D("A", filters=64, kernel_size=7)
    y = conv(keras.random.normal((8, 7, 7, 16)))  # (8, 7, 7, 64)
    ```

    Reference:
        van den Oord et al., "Pixel Recurrent Neural Networks", 2016.
    """

    def __init__(self, mask_type, filters, kernel_size, padding="same", **kwargs):
        if mask_type not in MASK_TYPES:
            raise ValueError(f'`mask_type` must be "A" or "B". Received: mask_type={mask_type!r}')
        if padding != "same":
            raise ValueError(
                "MaskedConv2D needs padding='same' so that outputs stay aligned with "
                f"the pixels they predict. Received: padding={padding!r}"
            )
        super().__init__(filters, kernel_size, padding=padding, **kwargs)
        if any(size % 2 == 0 for size in self.kernel_size):
            raise ValueError(
                "`kernel_size` must be odd so that the kernel has a center pixel. "
                f"Received: kernel_size={kernel_size!r}"
            )
        if self.strides != (1, 1):
            raise ValueError(f"`strides` must be 1. Received: strides={kwargs.get('strides')!r}")
        if self.data_format != "channels_last":
            raise ValueError(
                f"`data_format` must be 'channels_last'. Received: data_format={self.data_format!r}"
            )
        self.mask_type = mask_type

    def build(self, input_shape):
        super().build(input_shape)
        height, width = self.kernel_size
        mask = np.zeros((height, width, 1, 1), dtype="float32")
        mask[: height // 2] = 1.0
        mask[height // 2, : width // 2 + (self.mask_type == "B")] = 1.0
        # A constant, not a weight: it is fixed by the configuration.
        self._mask = mask

    def kernel_mask(self):
        """The 0/1 mask `(kernel_height, kernel_width, 1, 1)` applied to the kernel."""
        return ops.convert_to_tensor(self._mask, dtype=self.compute_dtype)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * self.kernel_mask())

    def get_config(self):
        config = super().get_config()
        config["mask_type"] = self.mask_type
        return config
