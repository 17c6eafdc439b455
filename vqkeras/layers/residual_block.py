import keras
from keras import layers

from vqkeras import validation
from vqkeras.layers.conv2d import Conv2D


@keras.saving.register_keras_serializable(package="vqkeras")
class ResidualBlock(layers.Layer):
    """Pre-activation residual block: `x + conv1x1(relu(conv3x3(relu(x))))`.

    The block of the VQ-VAE paper's encoder and decoder; the output has the
    same shape as the input.

    Args:
        hidden_channels: channels of the inner 3x3 convolution.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, hidden_channels, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = validation.positive_int("hidden_channels", hidden_channels)

    def build(self, input_shape):
        self.conv3x3 = Conv2D(
            self.hidden_channels, 3, padding="same", name="conv3x3", dtype=self.dtype_policy
        )
        self.conv3x3.build(input_shape)
        self.conv1x1 = layers.Conv2D(input_shape[-1], 1, name="conv1x1", dtype=self.dtype_policy)
        self.conv1x1.build(tuple(input_shape[:-1]) + (self.hidden_channels,))

    def call(self, inputs):
        hidden = self.conv3x3(keras.ops.relu(inputs))
        return inputs + self.conv1x1(keras.ops.relu(hidden))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["hidden_channels"] = self.hidden_channels
        return config
