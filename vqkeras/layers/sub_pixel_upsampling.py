import keras
from keras import layers, ops

from vqkeras import validation


@keras.saving.register_keras_serializable(package="vqkeras")
class SubPixelUpsampling(layers.Layer):
    """Doubles height and width: `Conv2D(4 * filters, 2)` then depth-to-space.

    Used instead of a stride-2 `Conv2DTranspose`, whose kernel gradient is
    15-20x slower on JAX's CPU path; the weights are the same on every
    backend, so they stay portable.

    Args:
        filters: output channels.
        **kwargs: base layer keyword arguments.

    Reference:
        Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
        Efficient Sub-Pixel Convolutional Neural Network", 2016.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = validation.positive_int("filters", filters)

    def build(self, input_shape):
        self.conv = layers.Conv2D(
            4 * self.filters, 2, padding="same", name="conv", dtype=self.dtype_policy
        )
        self.conv.build(input_shape)

    def call(self, inputs):
        return ops.depth_to_space(self.conv(inputs), 2)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        scale = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, scale(height), scale(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config["filters"] = self.filters
        return config
