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
takes its options by name beside the family's.
"""

import dataclasses
import types

from vqkeras import validation
from vqkeras.families.options import Options, int_list, option
from vqkeras.layers import ConvDecoder, ConvEncoder, PatchDiscriminator

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
