import keras
from keras import layers

from vqkeras import validation
from vqkeras.layers.conv2d import Conv2D
from vqkeras.layers.residual_block import ResidualBlock
from vqkeras.layers.sub_pixel_upsampling import SubPixelUpsampling


@keras.saving.register_keras_serializable(package="vqkeras")
class ConvDecoder(layers.Layer):
    """Convolutional decoder: a latent grid back to images.

    A 3x3 convolution to `channels[0]`, residual blocks, then one sub-pixel
    2x upsampling per entry of `channels`, then a 3x3 convolution to
    `output_channels`. Mirror of `ConvEncoder`: pass its `channels` reversed.

    Args:
        output_channels: channels of the images (1 grayscale, 3 RGB).
        channels: output channels of each 2x upsampling; its length is the
            number of upsamplings.
        num_residual_blocks: residual blocks before the upsamplings.
        residual_channels: hidden channels of the residual blocks (default: a
            quarter of `channels[0]`, at least 1).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a latent grid `(B, h, w, D)`.

    Returns:
        Images `(B, h * f, w * f, output_channels)` on the [-1, 1] scale
        (unbounded: no output activation), f = `2 ** len(channels)`.
    """

    def __init__(
        self,
        output_channels,
        channels=(128, 64),
        num_residual_blocks=2,
        residual_channels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_channels = validation.positive_int("output_channels", output_channels)
        self.channels = validation.positive_int_tuple("channels", channels)
        self.num_residual_blocks = validation.non_negative_int(
            "num_residual_blocks", num_residual_blocks
        )
        if residual_channels is None:
            residual_channels = max(1, self.channels[0] // 4)
        self.residual_channels = validation.positive_int("residual_channels", residual_channels)
        policy = self.dtype_policy
        self.stem = Conv2D(self.channels[0], 3, padding="same", name="stem", dtype=policy)
        self.residual_blocks = [
            ResidualBlock(self.residual_channels, name=f"residual_{i}", dtype=policy)
            for i in range(self.num_residual_blocks)
        ]
        self.upsamplings = [
            SubPixelUpsampling(c, name=f"up_{i}", dtype=policy) for i, c in enumerate(self.channels)
        ]
        self.output_conv = Conv2D(
            self.output_channels, 3, padding="same", name="output", dtype=policy
        )

    @property
    def upsampling_factor(self):
        return 2 ** len(self.channels)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in [self.stem, *self.residual_blocks, *self.upsamplings]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_conv.build(shape)

    def call(self, inputs):
        x = self.stem(inputs)
        for block in self.residual_blocks:
            x = block(x)
        x = keras.ops.relu(x)
        for upsampling in self.upsamplings:
            x = keras.ops.relu(upsampling(x))
        return self.output_conv(x)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        f = self.upsampling_factor
        scale = lambda size: None if size is None else size * f  # noqa: E731
        return (batch, scale(height), scale(width), self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_channels": self.output_channels,
                "channels": list(self.channels),
                "num_residual_blocks": self.num_residual_blocks,
                "residual_channels": self.residual_channels,
            }
        )
        return config
