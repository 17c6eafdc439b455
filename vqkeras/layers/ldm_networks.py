"""The encoder and decoder of the latent-diffusion / taming-transformers
autoencoders (diffusers' `AutoencoderKL` and `VQModel`, Stable Diffusion's
VAE, taming's VQGAN): `LDMEncoder`, `LDMDecoder`, their levels, and
`attention_levels_for` (taming's `attn_resolutions` as levels).

Levels are numbered from the full resolution: level `i` works at the image
size divided by `2 ** i`, with `channels * channel_multipliers[i]` channels,
in the encoder and in the decoder alike (taming's `down[i]` and `up[i]`).
Attention is placed at chosen levels (`attention_levels`), not at feature-map
sizes, so that the layers do not depend on the image size.
"""

import keras
from keras import layers

from vqkeras import validation
from vqkeras.layers.ldm_blocks import (
    AttentionBlock,
    Conv2D,
    Downsample,
    ResnetBlock,
    Upsample,
    check_groups,
    group_norm,
)


def attention_levels_for(attention_resolutions, resolution, num_levels):
    """The levels that taming's `attn_resolutions` put attention at.

    taming-transformers and latent diffusion add attention blocks to a level
    when its feature-map size, for training images of `resolution` pixels,
    is in `attn_resolutions`; level `i`'s size is `resolution // 2 ** i`. A
    size that no level has adds nothing, as in taming.

    Args:
        attention_resolutions: feature-map sizes, e.g. `(16,)`.
        resolution: the training image size of the source configuration.
        num_levels: the number of channel multipliers.

    Returns:
        The sorted tuple of level indices, e.g. `(4,)` for
        `attention_resolutions=(16,)`, `resolution=256` and 5 levels (taming's
        `vqgan_imagenet_f16_1024`).
    """
    resolution = validation.positive_int("resolution", resolution)
    num_levels = validation.positive_int("num_levels", num_levels)
    wanted = {validation.positive_int("attention_resolutions", r) for r in attention_resolutions}
    return tuple(i for i in range(num_levels) if resolution // 2**i in wanted)


def check_architecture(channels, channel_multipliers, num_res_blocks, attention_levels, groups):
    """The checked (channels, multipliers, blocks, levels, groups) of an LDM network."""
    channels = validation.positive_int("channels", channels)
    channel_multipliers = validation.positive_int_tuple("channel_multipliers", channel_multipliers)
    num_res_blocks = validation.positive_int("num_res_blocks", num_res_blocks)
    groups = validation.positive_int("groups", groups)
    levels = tuple(
        sorted({validation.non_negative_int("attention_levels", i) for i in attention_levels})
    )
    if levels and levels[-1] >= len(channel_multipliers):
        raise ValueError(
            f"`attention_levels` must be level indices below the number of channel multipliers "
            f"({len(channel_multipliers)}). Received: attention_levels={tuple(attention_levels)}"
        )
    for multiplier in channel_multipliers:
        check_groups(
            f"channels={channels} times the channel multiplier {multiplier}",
            channels * multiplier,
            groups,
        )
    return channels, channel_multipliers, num_res_blocks, levels, groups


def _epsilon(epsilon):
    return validation.float_in_range(
        "epsilon", epsilon, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
    )


class _Level(layers.Layer):
    """One level of an LDM network: `blocks` (ResnetBlocks to `out_channels`),
    `attentions` (one AttentionBlock after each block, or none), then a
    resampling the subclass adds."""

    def __init__(
        self,
        out_channels,
        num_blocks,
        attention=False,
        resample=True,
        dropout=0.0,
        groups=32,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.out_channels = validation.positive_int("out_channels", out_channels)
        self.num_blocks = validation.positive_int("num_blocks", num_blocks)
        self.attention = bool(attention)
        self.resample = bool(resample)
        self.dropout = dropout
        self.groups = groups
        self.epsilon = epsilon

    def _build_blocks(self, shape):
        policy = self.dtype_policy
        self.blocks, self.attentions = [], []
        for j in range(self.num_blocks):
            block = ResnetBlock(
                self.out_channels,
                dropout=self.dropout,
                groups=self.groups,
                epsilon=self.epsilon,
                name=f"block_{j}",
                dtype=policy,
            )
            block.build(shape)
            shape = block.compute_output_shape(shape)
            self.blocks.append(block)
            if self.attention:
                attention = AttentionBlock(
                    groups=self.groups, epsilon=self.epsilon, name=f"attention_{j}", dtype=policy
                )
                attention.build(shape)
                self.attentions.append(attention)
        return shape

    def _call_blocks(self, x, training):
        for j, block in enumerate(self.blocks):
            x = block(x, training=training)
            if self.attentions:
                x = self.attentions[j](x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "out_channels": self.out_channels,
                "num_blocks": self.num_blocks,
                "attention": self.attention,
                "resample": self.resample,
                "dropout": self.dropout,
                "groups": self.groups,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vqkeras")
class LDMDownLevel(_Level):
    """A level of `LDMEncoder`: `blocks`, `attentions` (empty without
    attention), then `downsample` (a `Downsample`, or None at the last
    level)."""

    def build(self, input_shape):
        shape = self._build_blocks(tuple(input_shape))
        self.downsample = None
        if self.resample:
            self.downsample = Downsample(name="downsample", dtype=self.dtype_policy)
            self.downsample.build(shape)

    def call(self, inputs, training=None):
        x = self._call_blocks(inputs, training)
        return x if self.downsample is None else self.downsample(x)

    def compute_output_shape(self, input_shape):
        return _scaled(input_shape, 0.5 if self.resample else 1, self.out_channels)


@keras.saving.register_keras_serializable(package="vqkeras")
class LDMUpLevel(_Level):
    """A level of `LDMDecoder`: `blocks`, `attentions` (empty without
    attention), then `upsample` (an `Upsample`, or None at level 0)."""

    def build(self, input_shape):
        shape = self._build_blocks(tuple(input_shape))
        self.upsample = None
        if self.resample:
            self.upsample = Upsample(name="upsample", dtype=self.dtype_policy)
            self.upsample.build(shape)

    def call(self, inputs, training=None):
        x = self._call_blocks(inputs, training)
        return x if self.upsample is None else self.upsample(x)

    def compute_output_shape(self, input_shape):
        return _scaled(input_shape, 2 if self.resample else 1, self.out_channels)


def _middle(network, channels, shape, mid_block_attention):
    """Creates and builds the middle block of `network`: `mid_block_1`,
    `mid_attention` (or None), `mid_block_2`."""
    common = {"groups": network.groups, "epsilon": network.epsilon, "dtype": network.dtype_policy}
    network.mid_block_1 = ResnetBlock(
        channels, dropout=network.dropout, name="mid_block_1", **common
    )
    network.mid_block_1.build(shape)
    network.mid_attention = None
    if mid_block_attention:
        network.mid_attention = AttentionBlock(name="mid_attention", **common)
        network.mid_attention.build(shape)
    network.mid_block_2 = ResnetBlock(
        channels, dropout=network.dropout, name="mid_block_2", **common
    )
    network.mid_block_2.build(shape)


def _call_middle(network, x, training):
    x = network.mid_block_1(x, training=training)
    if network.mid_attention is not None:
        x = network.mid_attention(x)
    return network.mid_block_2(x, training=training)


def _scaled(shape, factor, channels):
    batch, height, width, _ = shape
    # Exact for the powers of 2 used here (Downsample halves even sizes).
    scale = lambda size: None if size is None else int(size * factor)  # noqa: E731
    return (batch, scale(height), scale(width), channels)


_ARCHITECTURE_DOC = """
        channels: base channels (taming's `ch`; diffusers'
            `block_out_channels[0]` when the first multiplier is 1).
        channel_multipliers: channels of each level over `channels` (taming's
            `ch_mult`); one level per entry, each but the last halving the
            size (so the downsampling factor is `2 ** (levels - 1)`).
        num_res_blocks: ResnetBlocks per level (the decoder has one more).
        attention_levels: levels with an AttentionBlock after each of their
            ResnetBlocks, 0 being the full resolution;
            `attention_levels_for(attn_resolutions, resolution, levels)`
            translates taming's `attn_resolutions`.
        mid_block_attention: whether the middle block has its AttentionBlock
            (diffusers' `mid_block_add_attention`).
        dropout: dropout rate inside the ResnetBlocks in training.
        groups: groups of every GroupNormalization (diffusers'
            `norm_num_groups`); they must divide every level's channels.
        epsilon: epsilon of every GroupNormalization."""


@keras.saving.register_keras_serializable(package="vqkeras")
class LDMEncoder(layers.Layer):
    __doc__ = f"""Encoder of the LDM/taming autoencoders: images to a latent grid.

    `conv_in` (3x3 to `channels`), then per level `num_res_blocks`
    ResnetBlocks (each followed by an AttentionBlock at `attention_levels`)
    and a `Downsample` except at the last level; the middle block (ResnetBlock,
    AttentionBlock, ResnetBlock); GroupNorm, swish, `conv_out` (3x3 to
    `z_channels`, doubled with `double_z`); then `quant_conv` (1x1 to
    `latent_channels`) unless `use_quant_conv=False`.

    Sublayers (created in `build`, when the image channels are known), in the
    order of `weights`:

        conv_in                       Conv2D 3x3
        down[i], i = 0 .. levels - 1  LDMDownLevel:
            blocks[j]                 ResnetBlock (norm1, conv1, norm2, conv2, conv_shortcut)
            attentions[j]             AttentionBlock (norm, q, k, v, proj_out), or no entries
            downsample                Downsample (conv), None at the last level
        mid_block_1                   ResnetBlock
        mid_attention                 AttentionBlock, or None
        mid_block_2                   ResnetBlock
        norm_out                      GroupNormalization
        conv_out                      Conv2D 3x3
        quant_conv                    Conv2D 1x1, or None

    (within a level the weights come block_0, attention_0, block_1, ...).
    Correspondence: taming `encoder.down.{{i}}.block.{{j}}` /
    `.attn.{{j}}` / `.downsample`, `encoder.mid.block_1` / `.attn_1` /
    `.block_2`, `encoder.norm_out`, `encoder.conv_out`, `quant_conv`;
    diffusers `encoder.down_blocks.{{i}}.resnets.{{j}}` / `.attentions.{{j}}` /
    `.downsamplers.0`, `encoder.mid_block.resnets.0` / `.attentions.0` /
    `.resnets.1`, `encoder.conv_norm_out`, `encoder.conv_out`, `quant_conv`.

    Args:
        latent_channels: channels of the output (for a KL autoencoder: 2 x the
            latent channels, means then log-variances).{_ARCHITECTURE_DOC}
        z_channels: channels of `conv_out` before doubling (taming's
            `z_channels`; default: `latent_channels`, halved with `double_z`).
        double_z: whether `conv_out` gives `2 * z_channels` channels (the KL
            autoencoders' means and log-variances).
        use_quant_conv: whether the 1x1 `quant_conv` follows `conv_out`
            (diffusers' `use_quant_conv`; without it `conv_out`'s channels
            must be `latent_channels`).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: images `(B, H, W, C)` scaled to [-1, 1], H and W multiples of
            `downsampling_factor`.
        training: whether dropout is on.

    Returns:
        The latent grid `(B, H / f, W / f, latent_channels)`, f =
        `downsampling_factor`.

    Example:

    ```python
    encoder = LDMEncoder(8, channels=32, channel_multipliers=(1, 2), double_z=True)
    encoder(images).shape  # (B, H / 2, W / 2, 8): means and log-variances of 4 channels
    ```
    """

    def __init__(
        self,
        latent_channels,
        channels=128,
        channel_multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        attention_levels=(),
        mid_block_attention=True,
        z_channels=None,
        double_z=False,
        use_quant_conv=True,
        dropout=0.0,
        groups=32,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_channels = validation.positive_int("latent_channels", latent_channels)
        (
            self.channels,
            self.channel_multipliers,
            self.num_res_blocks,
            self.attention_levels,
            self.groups,
        ) = check_architecture(
            channels, channel_multipliers, num_res_blocks, attention_levels, groups
        )
        self.mid_block_attention = bool(mid_block_attention)
        self.double_z = bool(double_z)
        self.use_quant_conv = bool(use_quant_conv)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.epsilon = _epsilon(epsilon)
        factor = 2 if self.double_z else 1
        if z_channels is None:
            if self.latent_channels % factor:
                raise ValueError(
                    "With double_z and no z_channels, z_channels is half of latent_channels, "
                    f"which must be even. Received: latent_channels={latent_channels}"
                )
            z_channels = self.latent_channels // factor
        self.z_channels = validation.positive_int("z_channels", z_channels)
        if not self.use_quant_conv and self.z_channels * factor != self.latent_channels:
            raise ValueError(
                "Without quant_conv, conv_out gives the latents: z_channels"
                f"{' x 2 (double_z)' if self.double_z else ''} must equal latent_channels. "
                f"Received: z_channels={z_channels}, double_z={self.double_z}, "
                f"latent_channels={latent_channels}"
            )

    @property
    def downsampling_factor(self):
        return 2 ** (len(self.channel_multipliers) - 1)

    def build(self, input_shape):
        validation.check_image_batch(
            keras.KerasTensor(tuple(input_shape)),
            None,
            self.downsampling_factor,
            name=f"LDMEncoder '{self.name}' inputs",
        )
        if input_shape[-1] is None:
            raise ValueError(
                f"LDMEncoder '{self.name}' needs a known number of image channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        policy = self.dtype_policy
        levels = len(self.channel_multipliers)
        shape = tuple(input_shape)
        self.conv_in = Conv2D(self.channels, 3, padding="same", name="conv_in", dtype=policy)
        self.conv_in.build(shape)
        shape = self.conv_in.compute_output_shape(shape)
        self.down = []
        for i, multiplier in enumerate(self.channel_multipliers):
            level = LDMDownLevel(
                self.channels * multiplier,
                self.num_res_blocks,
                attention=i in self.attention_levels,
                resample=i < levels - 1,
                dropout=self.dropout,
                groups=self.groups,
                epsilon=self.epsilon,
                name=f"down_{i}",
                dtype=policy,
            )
            level.build(shape)
            shape = level.compute_output_shape(shape)
            self.down.append(level)
        _middle(self, shape[-1], shape, self.mid_block_attention)
        self.norm_out = group_norm(self.groups, self.epsilon, "norm_out", policy)
        self.norm_out.build(shape)
        z = self.z_channels * (2 if self.double_z else 1)
        self.conv_out = Conv2D(z, 3, padding="same", name="conv_out", dtype=policy)
        self.conv_out.build(shape)
        self.quant_conv = None
        if self.use_quant_conv:
            self.quant_conv = Conv2D(self.latent_channels, 1, name="quant_conv", dtype=policy)
            self.quant_conv.build(shape[:-1] + (z,))

    def call(self, inputs, training=None):
        x = self.conv_in(inputs)
        for level in self.down:
            x = level(x, training=training)
        x = _call_middle(self, x, training)
        x = self.conv_out(keras.ops.silu(self.norm_out(x)))
        return x if self.quant_conv is None else self.quant_conv(x)

    def compute_output_shape(self, input_shape):
        return _scaled(input_shape, 1 / self.downsampling_factor, self.latent_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_channels": self.latent_channels,
                "channels": self.channels,
                "channel_multipliers": list(self.channel_multipliers),
                "num_res_blocks": self.num_res_blocks,
                "attention_levels": list(self.attention_levels),
                "mid_block_attention": self.mid_block_attention,
                "z_channels": self.z_channels,
                "double_z": self.double_z,
                "use_quant_conv": self.use_quant_conv,
                "dropout": self.dropout,
                "groups": self.groups,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vqkeras")
class LDMDecoder(layers.Layer):
    __doc__ = f"""Decoder of the LDM/taming autoencoders: a latent grid to images.

    `post_quant_conv` (1x1 to `z_channels`) unless `use_post_quant_conv=False`;
    `conv_in` (3x3 to the last level's channels); the middle block
    (ResnetBlock, AttentionBlock, ResnetBlock); then the levels from the last
    to level 0, each `num_res_blocks + 1` ResnetBlocks (each followed by an
    AttentionBlock at `attention_levels`) and an `Upsample` except at level
    0; GroupNorm, swish, `conv_out` (3x3 to `output_channels`).

    Sublayers (created in `build`, when the latent channels are known), in
    the order of `weights`:

        post_quant_conv               Conv2D 1x1, or None
        conv_in                       Conv2D 3x3
        mid_block_1                   ResnetBlock
        mid_attention                 AttentionBlock, or None
        mid_block_2                   ResnetBlock
        up[i], i = 0 .. levels - 1    LDMUpLevel (indexed by level, run from the last):
            blocks[j]                 ResnetBlock (norm1, conv1, norm2, conv2, conv_shortcut)
            attentions[j]             AttentionBlock (norm, q, k, v, proj_out), or no entries
            upsample                  Upsample (conv), None at level 0
        norm_out                      GroupNormalization
        conv_out                      Conv2D 3x3

    Correspondence: taming `post_quant_conv`, `decoder.conv_in`,
    `decoder.mid.block_1` / `.attn_1` / `.block_2`,
    `decoder.up.{{i}}.block.{{j}}` / `.attn.{{j}}` / `.upsample`,
    `decoder.norm_out`, `decoder.conv_out`; diffusers `post_quant_conv`,
    `decoder.conv_in`, `decoder.mid_block.resnets.0` / `.attentions.0` /
    `.resnets.1`, `decoder.up_blocks.{{levels - 1 - i}}.resnets.{{j}}` /
    `.attentions.{{j}}` / `.upsamplers.0` (diffusers numbers its up blocks
    in the order they run), `decoder.conv_norm_out`, `decoder.conv_out`.

    Args:
        output_channels: channels of the images (1 grayscale, 3 RGB).{_ARCHITECTURE_DOC}
        z_channels: channels after `post_quant_conv`, into `conv_in`
            (taming's `z_channels`; default: the latent channels).
        use_post_quant_conv: whether the 1x1 `post_quant_conv` comes first
            (diffusers' `use_post_quant_conv`; without it the latent channels
            must be `z_channels` when that is given).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a latent grid `(B, h, w, D)`.
        training: whether dropout is on.

    Returns:
        Images `(B, h * f, w * f, output_channels)` on the [-1, 1] scale
        (no output activation), f = `upsampling_factor`.
    """

    def __init__(
        self,
        output_channels,
        channels=128,
        channel_multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        attention_levels=(),
        mid_block_attention=True,
        z_channels=None,
        use_post_quant_conv=True,
        dropout=0.0,
        groups=32,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_channels = validation.positive_int("output_channels", output_channels)
        (
            self.channels,
            self.channel_multipliers,
            self.num_res_blocks,
            self.attention_levels,
            self.groups,
        ) = check_architecture(
            channels, channel_multipliers, num_res_blocks, attention_levels, groups
        )
        self.mid_block_attention = bool(mid_block_attention)
        self.z_channels = (
            None if z_channels is None else validation.positive_int("z_channels", z_channels)
        )
        self.use_post_quant_conv = bool(use_post_quant_conv)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.epsilon = _epsilon(epsilon)

    @property
    def upsampling_factor(self):
        return 2 ** (len(self.channel_multipliers) - 1)

    def build(self, input_shape):
        latent_channels = input_shape[-1]
        if len(input_shape) != 4 or latent_channels is None:
            raise ValueError(
                f"LDMDecoder '{self.name}' expects latent grids (B, h, w, D) with a known D. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        z_channels = latent_channels if self.z_channels is None else self.z_channels
        if not self.use_post_quant_conv and z_channels != latent_channels:
            raise ValueError(
                f"Without post_quant_conv, LDMDecoder '{self.name}' takes latents of "
                f"z_channels={z_channels} channels. Received: input_shape={tuple(input_shape)}"
            )
        policy = self.dtype_policy
        shape = tuple(input_shape)
        self.post_quant_conv = None
        if self.use_post_quant_conv:
            self.post_quant_conv = Conv2D(z_channels, 1, name="post_quant_conv", dtype=policy)
            self.post_quant_conv.build(shape)
            shape = shape[:-1] + (z_channels,)
        top = self.channels * self.channel_multipliers[-1]
        self.conv_in = Conv2D(top, 3, padding="same", name="conv_in", dtype=policy)
        self.conv_in.build(shape)
        shape = shape[:-1] + (top,)
        _middle(self, top, shape, self.mid_block_attention)
        up = {}
        for i in reversed(range(len(self.channel_multipliers))):
            level = LDMUpLevel(
                self.channels * self.channel_multipliers[i],
                self.num_res_blocks + 1,
                attention=i in self.attention_levels,
                resample=i > 0,
                dropout=self.dropout,
                groups=self.groups,
                epsilon=self.epsilon,
                name=f"up_{i}",
                dtype=policy,
            )
            level.build(shape)
            shape = level.compute_output_shape(shape)
            up[i] = level
        # Indexed by level, as taming's `up`; tracked (so in `weights`) in that order.
        self.up = [up[i] for i in range(len(up))]
        self.norm_out = group_norm(self.groups, self.epsilon, "norm_out", policy)
        self.norm_out.build(shape)
        self.conv_out = Conv2D(
            self.output_channels, 3, padding="same", name="conv_out", dtype=policy
        )
        self.conv_out.build(shape)

    def call(self, inputs, training=None):
        x = inputs if self.post_quant_conv is None else self.post_quant_conv(inputs)
        x = _call_middle(self, self.conv_in(x), training)
        for level in reversed(self.up):
            x = level(x, training=training)
        return self.conv_out(keras.ops.silu(self.norm_out(x)))

    def compute_output_shape(self, input_shape):
        return _scaled(input_shape, self.upsampling_factor, self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_channels": self.output_channels,
                "channels": self.channels,
                "channel_multipliers": list(self.channel_multipliers),
                "num_res_blocks": self.num_res_blocks,
                "attention_levels": list(self.attention_levels),
                "mid_block_attention": self.mid_block_attention,
                "z_channels": self.z_channels,
                "use_post_quant_conv": self.use_post_quant_conv,
                "dropout": self.dropout,
                "groups": self.groups,
                "epsilon": self.epsilon,
            }
        )
        return config
