"""The denoiser of `vqkeras.models.LatentDiffusion`: a small UNet over latent
grids, conditioned on the time and a class label.

`TimestepResnetBlock` is the LDM/taming `ResnetBlock` with the time (and
class) embedding added between its two convolutions, as in the DDPM / LDM
UNets; `DiffusionUNet` stacks them in levels with skip connections, with
self-attention (`AttentionBlock`) at the lowest resolution.

Reference:
    Ho et al., "Denoising Diffusion Probabilistic Models", 2020; Rombach et
    al., "High-Resolution Image Synthesis with Latent Diffusion Models",
    CVPR 2022.
"""

import math

import keras
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.conv2d import Conv2D
from vqkeras.layers.ldm_blocks import AttentionBlock, Downsample, Upsample, check_groups, group_norm


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal features `(batch, dim)` of times `t` `(batch,)` (float32):
    `[cos(t * f_i), sin(t * f_i)]` with frequencies `f_i = max_period **
    (-i / (dim / 2))`, as in the DDPM / LDM UNets (`dim` even)."""
    half = dim // 2
    frequencies = ops.exp(-math.log(max_period) * ops.arange(half, dtype="float32") / float(half))
    angles = ops.cast(t, "float32")[:, None] * frequencies[None, :]
    return ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1)


@keras.saving.register_keras_serializable(package="vqkeras")
class TimestepResnetBlock(layers.Layer):
    """Residual block with a conditioning embedding added between its two
    convolutions.

    `shortcut(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x))) +
    dense(swish(embedding))))))`, with 3x3 convolutions, GroupNormalization
    and a 1x1 convolution as shortcut when the channels change.

    Args:
        out_channels: channels of the output.
        dropout: dropout rate before `conv2` in training.
        groups: groups of the GroupNormalizations.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: features `(B, H, W, C)`.
        embedding: conditioning features `(B, E)`.
        training: whether dropout is on.

    Returns:
        Features `(B, H, W, out_channels)`.
    """

    def __init__(self, out_channels, dropout=0.0, groups=32, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = validation.positive_int("out_channels", out_channels)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.groups = validation.positive_int("groups", groups)
        check_groups(f"TimestepResnetBlock '{self.name}'", self.out_channels, self.groups)

    def build(self, inputs_shape, embedding_shape):
        shape = tuple(inputs_shape)
        in_channels = int(shape[-1])
        check_groups(f"The input of TimestepResnetBlock '{self.name}'", in_channels, self.groups)
        policy = self.dtype_policy
        out_shape = shape[:-1] + (self.out_channels,)
        self.norm1 = group_norm(self.groups, 1e-6, "norm1", policy)
        self.norm1.build(shape)
        self.conv1 = Conv2D(self.out_channels, 3, padding="same", name="conv1", dtype=policy)
        self.conv1.build(shape)
        self.embedding_projection = layers.Dense(
            self.out_channels, name="embedding_projection", dtype=policy
        )
        self.embedding_projection.build(tuple(embedding_shape))
        self.norm2 = group_norm(self.groups, 1e-6, "norm2", policy)
        self.norm2.build(out_shape)
        self.dropout_layer = layers.Dropout(self.dropout, dtype=policy)
        self.conv2 = Conv2D(self.out_channels, 3, padding="same", name="conv2", dtype=policy)
        self.conv2.build(out_shape)
        self.conv_shortcut = None
        if in_channels != self.out_channels:
            self.conv_shortcut = Conv2D(self.out_channels, 1, name="conv_shortcut", dtype=policy)
            self.conv_shortcut.build(shape)

    def call(self, inputs, embedding, training=None):
        x = self.conv1(ops.silu(self.norm1(inputs)))
        x = x + self.embedding_projection(ops.silu(embedding))[:, None, None, :]
        x = self.dropout_layer(ops.silu(self.norm2(x)), training=training)
        x = self.conv2(x)
        shortcut = inputs if self.conv_shortcut is None else self.conv_shortcut(inputs)
        return shortcut + x

    def compute_output_shape(self, input_shape, embedding_shape=None):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"out_channels": self.out_channels, "dropout": self.dropout, "groups": self.groups}
        )
        return config


@keras.saving.register_keras_serializable(package="vqkeras")
class DiffusionUNet(layers.Layer):
    """A UNet that predicts a velocity (or noise) from a noisy latent grid, a
    time and a class label.

    `conv_in`, then `len(channel_multipliers)` levels of `num_blocks`
    `TimestepResnetBlock`s of `channels * multiplier` channels, each level
    but the last followed by a `Downsample`; a middle block (resnet block,
    single-head self-attention, resnet block) at the lowest resolution; the
    mirrored levels with `num_blocks + 1` blocks each, every block taking the
    matching skip features concatenated, with `Upsample` between levels;
    then GroupNorm, swish and `conv_out`, zero-initialized (so an untrained
    denoiser predicts 0). The conditioning embedding is an MLP of sinusoidal
    features of `1000 * t` plus, for `num_classes` classes, a learned class
    embedding with one more row, the null class `num_classes`, for
    classifier-free guidance.

    Grids whose height or width is not a multiple of `2 ** (levels - 1)` are
    padded at the bottom and right by reflection and cropped back (MNIST's
    7x7 latents with two levels).

    Args:
        out_channels: channels of the output (the latent channels).
        channels: channels of the first level.
        channel_multipliers: per level, its channels over `channels`.
        num_blocks: resnet blocks per level on the way down.
        num_classes: classes of the labels, or None for an unconditional
            denoiser.
        attention: whether the middle block has self-attention.
        dropout: dropout rate in the resnet blocks.
        groups: groups of the GroupNormalizations (they must divide every
            level's channels).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: noisy latents `(B, h, w, out_channels)`.
        t: times `(B,)` in [0, 1].
        labels: int labels `(B,)` in `[0, num_classes]` (`num_classes`:
            the null class); None for an unconditional denoiser.
        training: whether dropout is on.

    Returns:
        float32 predictions of the latents' shape.
    """

    def __init__(
        self,
        out_channels,
        channels=64,
        channel_multipliers=(1, 2),
        num_blocks=2,
        num_classes=None,
        attention=True,
        dropout=0.0,
        groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.out_channels = validation.positive_int("out_channels", out_channels)
        self.channels = validation.positive_int("channels", channels)
        self.channel_multipliers = validation.positive_int_tuple(
            "channel_multipliers", channel_multipliers
        )
        self.num_blocks = validation.positive_int("num_blocks", num_blocks)
        self.num_classes = (
            None if num_classes is None else validation.positive_int("num_classes", num_classes)
        )
        self.attention = bool(attention)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.groups = validation.positive_int("groups", groups)
        for multiplier in self.channel_multipliers:
            check_groups("DiffusionUNet", self.channels * multiplier, self.groups)
        if self.channels % 2:
            raise ValueError(
                "`channels` must be even (the sinusoidal time features come in cos/sin pairs). "
                f"Received: channels={channels!r}"
            )

    @property
    def factor(self):
        """Downsampling factor of the lowest resolution."""
        return 2 ** (len(self.channel_multipliers) - 1)

    def _padded(self, size):
        return None if size is None else -(-size // self.factor) * self.factor

    def build(self, inputs_shape, t_shape=None, labels_shape=None):
        shape = tuple(inputs_shape)
        if len(shape) != 4 or shape[-1] != self.out_channels:
            raise ValueError(
                f"DiffusionUNet '{self.name}' expects latents (B, h, w, {self.out_channels}). "
                f"Received: inputs_shape={shape}"
            )
        policy = self.dtype_policy
        batch = shape[0]
        height, width = self._padded(shape[1]), self._padded(shape[2])
        embed_dim = 4 * self.channels
        self.time_dense1 = layers.Dense(embed_dim, name="time_dense1", dtype=policy)
        self.time_dense1.build((batch, self.channels))
        self.time_dense2 = layers.Dense(embed_dim, name="time_dense2", dtype=policy)
        self.time_dense2.build((batch, embed_dim))
        self.class_embedding = None
        if self.num_classes is not None:
            # Row num_classes is the null class of classifier-free guidance.
            self.class_embedding = layers.Embedding(
                self.num_classes + 1, embed_dim, name="class_embedding", dtype=policy
            )
            self.class_embedding.build((batch,))
        embedding_shape = (batch, embed_dim)

        def features(size_h, size_w, width_):
            return (batch, size_h, size_w, width_)

        self.conv_in = Conv2D(self.channels, 3, padding="same", name="conv_in", dtype=policy)
        self.conv_in.build(shape[:1] + (height, width, self.out_channels))
        current = self.channels
        skips = [current]
        self.down_blocks, self.downsamples = [], []
        for level, multiplier in enumerate(self.channel_multipliers):
            blocks = []
            for index in range(self.num_blocks):
                block = TimestepResnetBlock(
                    self.channels * multiplier,
                    self.dropout,
                    self.groups,
                    name=f"down_{level}_block_{index}",
                    dtype=policy,
                )
                block.build(features(height, width, current), embedding_shape)
                current = block.out_channels
                skips.append(current)
                blocks.append(block)
            self.down_blocks.append(blocks)
            if level < len(self.channel_multipliers) - 1:
                downsample = Downsample(name=f"down_{level}_downsample", dtype=policy)
                downsample.build(features(height, width, current))
                height, width = height // 2, width // 2
                skips.append(current)
                self.downsamples.append(downsample)
        self.middle_block1 = TimestepResnetBlock(
            current, self.dropout, self.groups, name="middle_block1", dtype=policy
        )
        self.middle_block1.build(features(height, width, current), embedding_shape)
        self.middle_attention = None
        if self.attention:
            self.middle_attention = AttentionBlock(
                groups=self.groups, name="middle_attention", dtype=policy
            )
            self.middle_attention.build(features(height, width, current))
        self.middle_block2 = TimestepResnetBlock(
            current, self.dropout, self.groups, name="middle_block2", dtype=policy
        )
        self.middle_block2.build(features(height, width, current), embedding_shape)
        self.up_blocks, self.upsamples = [], []
        for level in reversed(range(len(self.channel_multipliers))):
            multiplier = self.channel_multipliers[level]
            blocks = []
            for index in range(self.num_blocks + 1):
                block = TimestepResnetBlock(
                    self.channels * multiplier,
                    self.dropout,
                    self.groups,
                    name=f"up_{level}_block_{index}",
                    dtype=policy,
                )
                block.build(features(height, width, current + skips.pop()), embedding_shape)
                current = block.out_channels
                blocks.append(block)
            self.up_blocks.append(blocks)
            if level > 0:
                upsample = Upsample(name=f"up_{level}_upsample", dtype=policy)
                upsample.build(features(height, width, current))
                height, width = 2 * height, 2 * width
                self.upsamples.append(upsample)
        self.norm_out = group_norm(self.groups, 1e-6, "norm_out", policy)
        self.norm_out.build(features(height, width, current))
        self.conv_out = Conv2D(
            self.out_channels,
            3,
            padding="same",
            kernel_initializer="zeros",
            name="conv_out",
            dtype=policy,
        )
        self.conv_out.build(features(height, width, current))

    def embedding(self, t, labels=None):
        """Conditioning features `(B, 4 * channels)` of times `t` and labels."""
        x = timestep_embedding(1000.0 * ops.cast(t, "float32"), self.channels)
        x = self.time_dense2(ops.silu(self.time_dense1(ops.cast(x, self.compute_dtype))))
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError(
                    f"DiffusionUNet '{self.name}' is class-conditional "
                    f"(num_classes={self.num_classes}): labels are required."
                )
            x = x + self.class_embedding(ops.cast(labels, "int32"))
        return x

    def call(self, inputs, t, labels=None, training=None):
        embedding = self.embedding(t, labels)
        height, width = inputs.shape[1], inputs.shape[2]
        pad_h, pad_w = self._padded(height) - height, self._padded(width) - width
        x = inputs
        if pad_h or pad_w:
            x = ops.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        x = self.conv_in(x)
        skips = [x]
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                x = block(x, embedding, training=training)
                skips.append(x)
            if level < len(self.downsamples):
                x = self.downsamples[level](x)
                skips.append(x)
        x = self.middle_block1(x, embedding, training=training)
        if self.middle_attention is not None:
            x = self.middle_attention(x)
        x = self.middle_block2(x, embedding, training=training)
        for level, blocks in enumerate(self.up_blocks):
            for block in blocks:
                x = block(ops.concatenate([x, skips.pop()], axis=-1), embedding, training=training)
            if level < len(self.upsamples):
                x = self.upsamples[level](x)
        x = self.conv_out(ops.silu(self.norm_out(x)))
        return ops.cast(x[:, :height, :width, :], "float32")

    def compute_output_shape(self, input_shape, t_shape=None, labels_shape=None):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "out_channels": self.out_channels,
                "channels": self.channels,
                "channel_multipliers": self.channel_multipliers,
                "num_blocks": self.num_blocks,
                "num_classes": self.num_classes,
                "attention": self.attention,
                "dropout": self.dropout,
                "groups": self.groups,
            }
        )
        return config
