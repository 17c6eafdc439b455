"""Encoder/decoder architectures: a registered choice that every
autoencoder family builds with.

An architecture is a class with an `Options` dataclass (its sizes) and the
layers a family asks of it, registered with `register_architecture`:

    encoder(latent_channels)          images -> latent grid
    decoder(image_channels)           latent grid -> images
    downsampling                      the factor from images to the grid
    width                             the channels of the encoder's last stage
    extra_encoder_stage(channels)     one more halving (VQ-VAE-2's top grid)
    extra_decoder_stage(channels)     its mirror
    discriminator()                   a patch discriminator as deep as the encoder

`build_autoencoder("vqvae", shape, architecture="conv", channels=(64, 128))`
takes its options by name beside the family's. Registered: "conv" (the
zoo's small conv stacks) and "ldm" (the latent-diffusion / taming
autoencoder).
"""

import argparse
import dataclasses
import types

from vqkeras import validation
from vqkeras.families.options import Options, int_list, option
from vqkeras.layers import ConvDecoder, ConvEncoder, LDMDecoder, LDMEncoder, PatchDiscriminator
from vqkeras.layers.ldm_networks import check_architecture

_REGISTRY = {}
ARCHITECTURES = types.MappingProxyType(_REGISTRY)
"""The registered architectures, read-only: name -> class."""
DEFAULT_ARCHITECTURE = "conv"


def register_architecture(name):
    """Class decorator that adds an architecture to `ARCHITECTURES` under `name`."""

    def register(cls):
        if name in _REGISTRY:
            raise ValueError(
                f"An architecture named {name!r} is already registered. "
                f"Registered: {', '.join(_REGISTRY)}."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def get_architecture(name):
    """The architecture class registered as `name`, or a clear error."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {name!r}. Expected one of: {', '.join(ARCHITECTURES)}."
        )
    return ARCHITECTURES[name]


@dataclasses.dataclass(frozen=True)
class ConvOptions(Options):
    channels: tuple = option(
        (64, 128),
        "channels of the encoder's stride-2 convolutions; their count is the number of "
        "halvings of the image size (the decoder mirrors them)",
        parse=int_list,
        metavar="C1,C2,...",
    )
    num_residual_blocks: int = option(
        1, "residual blocks in the encoder and in the decoder", parse=int, metavar="N"
    )
    residual_channels: int | None = option(
        None,
        "hidden channels of the residual blocks (none: a quarter of the widest channels)",
        parse=int,
        metavar="N",
    )

    def __post_init__(self):
        self.check("channels", validation.positive_int_tuple)
        self.check("num_residual_blocks", validation.non_negative_int)
        self.check("residual_channels", validation.positive_int, optional=True)


@register_architecture("conv")
class ConvArchitecture:
    """`ConvEncoder` / `ConvDecoder`: stride-2 convolutions, residual blocks,
    sub-pixel upsampling (the zoo's models)."""

    Options = ConvOptions

    def __init__(self, options):
        self.options = options

    @property
    def downsampling(self):
        return 2 ** len(self.options.channels)

    def _residual_blocks(self):
        return {
            "num_residual_blocks": self.options.num_residual_blocks,
            "residual_channels": self.options.residual_channels,
        }

    def encoder(self, latent_channels):
        return ConvEncoder(
            latent_channels, channels=self.options.channels, **self._residual_blocks()
        )

    def decoder(self, image_channels):
        return ConvDecoder(
            image_channels, channels=self.options.channels[::-1], **self._residual_blocks()
        )

    @property
    def width(self):
        """Channels of the encoder's last stage (a second stage's input)."""
        return self.options.channels[-1]

    def extra_encoder_stage(self, latent_channels):
        return ConvEncoder(latent_channels, channels=(self.width,), **self._residual_blocks())

    def extra_decoder_stage(self, output_channels):
        return ConvDecoder(output_channels, channels=(self.width,), **self._residual_blocks())

    def discriminator(self):
        """A `PatchDiscriminator` with as many stride-2 layers as the
        encoder, from its first channels (its logits come on the latent grid)."""
        return PatchDiscriminator(
            filters=self.options.channels[0], num_layers=len(self.options.channels)
        )


def level_list(text):
    """Level indices separated by commas ("2,3" -> (2, 3)); 0 is the full
    resolution."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected level indices (0 is the full resolution) separated by commas, e.g. 2,3; "
            f"received {text!r}"
        )
    return values


@dataclasses.dataclass(frozen=True)
class LDMOptions(Options):
    channels: int = option(128, "base channels of the levels (taming's ch)", parse=int, metavar="C")
    channel_multipliers: tuple = option(
        (1, 2, 2, 4),
        "channels of each level over --channels (taming's ch_mult); each level but the last "
        "halves the image size",
        parse=int_list,
        metavar="M1,M2,...",
    )
    num_res_blocks: int = option(
        2, "ResNet blocks per encoder level (the decoder has one more)", parse=int, metavar="N"
    )
    attention_levels: tuple | None = option(
        None,
        "levels with self-attention after each ResNet block, 0 the full resolution (taming's "
        "attn_resolutions=[16] at resolution 256 is level 4 of ch_mult 1,1,2,2,4; none: "
        "attention in the middle blocks only)",
        parse=level_list,
        metavar="L1,L2,...",
    )
    mid_block_attention: bool = option(True, "self-attention in the middle blocks")
    z_channels: int | None = option(
        None,
        "channels of the encoder's last convolution (before --double-z) and of the decoder's "
        "first (none: the latent channels)",
        parse=int,
        metavar="N",
    )
    double_z: bool = option(
        False,
        "the encoder's last convolution gives 2 x z-channels (LDM's KL autoencoders; with no "
        "--z-channels the weights are the same either way)",
    )
    quant_conv: bool = option(
        True, "1x1 convolutions between the encoder, the latents and the decoder"
    )
    dropout: float = option(0.0, "dropout rate in the ResNet blocks", parse=float, metavar="RATE")
    groups: int = option(
        32,
        "groups of every GroupNormalization; they must divide every level's channels",
        parse=int,
        metavar="G",
    )

    def __post_init__(self):
        checked = check_architecture(
            self.channels,
            self.channel_multipliers,
            self.num_res_blocks,
            self.attention_levels or (),
            self.groups,
        )
        names = ("channels", "channel_multipliers", "num_res_blocks", "attention_levels", "groups")
        for name, value in zip(names, checked):
            if name != "attention_levels" or self.attention_levels is not None:
                object.__setattr__(self, name, value)
        self.check("z_channels", validation.positive_int, optional=True)
        self.check("dropout", validation.float_in_range, 0.0, 1.0, high_inclusive=False)


@register_architecture("ldm")
class LDMArchitecture:
    """`LDMEncoder` / `LDMDecoder`: the latent-diffusion and taming-transformers
    autoencoder (GroupNorm and swish ResNet blocks, self-attention, diffusers'
    AutoencoderKL and VQModel).

    The encoder ends with `conv_out` to `z_channels` (doubled with
    `double_z`) and `quant_conv` to the channels the family asks (2 x
    latent_dim for the KL families, latent_dim for the VQ ones); the decoder
    starts with `post_quant_conv` from the latents to `z_channels`. With no
    `z_channels` these are the latent channels, so the KL families get the
    shapes of diffusers' `AutoencoderKL(latent_channels=latent_dim)` and the VQ
    families those of `VQModel(latent_channels=vq_embed_dim=latent_dim)`.
    """

    Options = LDMOptions

    def __init__(self, options):
        self.options = options

    @property
    def downsampling(self):
        return 2 ** (len(self.options.channel_multipliers) - 1)

    def _common(self, **overrides):
        options = self.options
        common = {
            "channels": options.channels,
            "channel_multipliers": options.channel_multipliers,
            "num_res_blocks": options.num_res_blocks,
            "attention_levels": options.attention_levels or (),
            "mid_block_attention": options.mid_block_attention,
            "z_channels": options.z_channels,
            "dropout": options.dropout,
            "groups": options.groups,
        }
        common.update(overrides)
        return common

    def encoder(self, latent_channels):
        return LDMEncoder(
            latent_channels,
            double_z=self.options.double_z,
            use_quant_conv=self.options.quant_conv,
            **self._common(),
        )

    def decoder(self, image_channels):
        return LDMDecoder(
            image_channels, use_post_quant_conv=self.options.quant_conv, **self._common()
        )

    @property
    def width(self):
        """Channels of the encoder's last level (a second stage's input)."""
        return self.options.channels * self.options.channel_multipliers[-1]

    def _stage(self):
        # One more halving at the last level's width: two levels of `width`
        # channels, attention in the middle block only.
        return self._common(
            channels=self.width, channel_multipliers=(1, 1), attention_levels=(), z_channels=None
        )

    def extra_encoder_stage(self, latent_channels):
        return LDMEncoder(latent_channels, **self._stage())

    def extra_decoder_stage(self, output_channels):
        return LDMDecoder(output_channels, **self._stage())

    def discriminator(self):
        """A `PatchDiscriminator` (taming's NLayerDiscriminator: 64 filters,
        3 stride-2 layers), with fewer layers and filters for a shallower or
        narrower network, so that it takes every image size the encoder does."""
        halvings = len(self.options.channel_multipliers) - 1
        if halvings == 0:
            raise ValueError(
                "The ldm architecture's discriminator needs at least one halving of the image "
                "size: give at least two channel multipliers. Received: channel_multipliers="
                f"{self.options.channel_multipliers}"
            )
        return PatchDiscriminator(
            filters=min(64, self.options.channels), num_layers=min(3, halvings)
        )
