import keras
from keras import layers

from vqkeras import validation
from vqkeras.layers.residual_block import ResidualBlock


@keras.saving.register_keras_serializable(package="vqkeras")
class ConvEncoder(layers.Layer):
    """Convolutional encoder: images to a latent grid.

    One stride-2 4x4 convolution per entry of `channels` (so the grid is the
    image size divided by `2 ** len(channels)`), then residual blocks, then a
    1x1 projection to `latent_dim` channels.

    Args:
        latent_dim: channels of the output latent grid (D for a quantizer).
        channels: output channels of each downsampling convolution; its length
            is the number of stride-2 downsamplings.
        num_residual_blocks: residual blocks after the downsamplings.
        residual_channels: hidden channels of the residual blocks (default: a
            quarter of the last entry of `channels`, at least 1).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: images `(B, H, W, C)` scaled to [-1, 1], H and W multiples of
            `downsampling_factor`.

    Returns:
        The latent grid `(B, H / f, W / f, latent_dim)`, f the downsampling
        factor.
    """

    def __init__(
        self,
        latent_dim,
        channels=(64, 128),
        num_residual_blocks=2,
        residual_channels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = validation.positive_int("latent_dim", latent_dim)
        self.channels = validation.positive_int_tuple("channels", channels)
        self.num_residual_blocks = validation.non_negative_int(
            "num_residual_blocks", num_residual_blocks
        )
        if residual_channels is None:
            residual_channels = max(1, self.channels[-1] // 4)
        self.residual_channels = validation.positive_int("residual_channels", residual_channels)
        policy = self.dtype_policy
        self.downsamplings = [
            layers.Conv2D(
                c, 4, strides=2, padding="same", activation="relu", name=f"down_{i}", dtype=policy
            )
            for i, c in enumerate(self.channels)
        ]
        self.residual_blocks = [
            ResidualBlock(self.residual_channels, name=f"residual_{i}", dtype=policy)
            for i in range(self.num_residual_blocks)
        ]
        self.projection = layers.Conv2D(self.latent_dim, 1, name="projection", dtype=policy)

    @property
    def downsampling_factor(self):
        return 2 ** len(self.channels)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.downsamplings + self.residual_blocks:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.projection.build(shape)

    def call(self, inputs):
        x = inputs
        for layer in self.downsamplings + self.residual_blocks:
            x = layer(x)
        return self.projection(keras.ops.relu(x))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        f = self.downsampling_factor
        scale = lambda size: None if size is None else size // f  # noqa: E731
        return (batch, scale(height), scale(width), self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_dim": self.latent_dim,
                "channels": list(self.channels),
                "num_residual_blocks": self.num_residual_blocks,
                "residual_channels": self.residual_channels,
            }
        )
        return config
