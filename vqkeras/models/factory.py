"""One-call construction of each autoencoder family from a few sizes.

`build_autoencoder("ema-vqvae", (32, 32, 3))` gives a built, uncompiled model
made of the standard parts (`ConvEncoder`, `ConvDecoder` and a quantizer), so
that `vqkeras train` and the benchmarks compare families built the same way.
Models with other parts are built by calling the classes directly.

Each family is one entry of a registry: a builder function decorated with
`register_family`. `build_autoencoder`, `FAMILIES` and the choices of
`vqkeras train --family` all read the registry, so a new family is one
decorated function here, for example a VQ-VAE whose codebook is never
restarted:

    @register_family("plain-ema-vqvae", default_latent_dim=64)
    def _plain_ema_vqvae(parts):
        quantizer = EMAVectorQuantizer(parts.num_embeddings, parts.latent_dim)
        encoder = parts.encoder(parts.latent_dim)
        return VQVAE(encoder, parts.decoder, quantizer, name=parts.name)
"""

import dataclasses
import types
from collections.abc import Callable

from vqkeras import validation
from vqkeras.layers import (
    ConvDecoder,
    ConvEncoder,
    EMAVectorQuantizer,
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    PatchDiscriminator,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from vqkeras.layers.finite_scalar_quantizer import check_levels
from vqkeras.models.adversarial_klvae import AdversarialKLVAE
from vqkeras.models.autoencoder import Autoencoder
from vqkeras.models.klvae import KLVAE
from vqkeras.models.rqvae import RQVAE
from vqkeras.models.vae import VAE
from vqkeras.models.vqgan import VQGAN
from vqkeras.models.vqvae import VQVAE
from vqkeras.models.vqvae2 import VQVAE2


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered family: what `build_autoencoder` needs to know of it.

    Attributes:
        name: the name `build_autoencoder` and `vqkeras train --family` take.
        build: the builder, `build(parts) -> keras.Model` (see `FamilyParts`).
        default_latent_dim: the latent channels when none are given.
        extra_downsampling: halvings of the image size beyond the encoder's
            (the top grid of a VQ-VAE-2 is half the bottom one's size).
        codebook_options: the names of `CODEBOOK_OPTIONS` it passes to its
            codebooks; `build_autoencoder` refuses the others.
    """

    name: str
    build: Callable
    default_latent_dim: int
    extra_downsampling: int = 0
    codebook_options: tuple = ()


# Insertion order is the order of `FAMILIES` and of the command-line choices.
_REGISTRY = {}
FAMILIES = types.MappingProxyType(_REGISTRY)
"""The registered families, read-only: name -> `Family`. It follows the
registry, so a family registered later appears here too."""


# The options of the codebooks of `VectorQuantizer` and `EMAVectorQuantizer`
# that `build_autoencoder` passes on, with their defaults (the layers').
CODEBOOK_OPTIONS = types.MappingProxyType(
    {
        "code_dim": None,
        "normalize_codes": False,
        "kmeans_init": False,
        "gradient_estimator": "straight_through",
    }
)

# The families trained against a discriminator, which take `discriminator_start`,
# `discriminator_weight` and `perceptual_loss`.
ADVERSARIAL_FAMILIES = ("vqgan", "adversarial-klvae")


def register_family(name, *, default_latent_dim, extra_downsampling=0, codebook_options=()):
    """Decorator that adds a family to `FAMILIES` under `name`.

    Args:
        name: the family's name, e.g. "ema-vqvae".
        default_latent_dim: latent channels when `build_autoencoder` gets
            none: few for continuous latents (as the AutoencoderKL of latent
            diffusion), more for code vectors.
        extra_downsampling: halvings of the image size beyond the encoder's.
        codebook_options: the names of `CODEBOOK_OPTIONS` that the builder
            passes to its codebooks (from `parts.codebook_options`).

    Returns:
        A decorator that registers the builder, `build(parts) -> keras.Model`,
        and returns it unchanged. The builder makes the model from the parts
        and arguments in `parts` (a `FamilyParts`); `build_autoencoder` builds
        it for the image shape.

    Raises:
        ValueError: if a family of that name is already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A family name must be a non-empty string. Received: name={name!r}.")
    default_latent_dim = validation.positive_int("default_latent_dim", default_latent_dim)
    extra_downsampling = validation.non_negative_int("extra_downsampling", extra_downsampling)
    codebook_options = tuple(codebook_options)
    unknown = [option for option in codebook_options if option not in CODEBOOK_OPTIONS]
    if unknown:
        raise ValueError(
            f"Unknown codebook options {unknown}. Expected names of: {', '.join(CODEBOOK_OPTIONS)}."
        )

    def register(build):
        if name in _REGISTRY:
            raise ValueError(
                f"A family named {name!r} is already registered. "
                f"Registered: {', '.join(_REGISTRY)}."
            )
        _REGISTRY[name] = Family(
            name, build, default_latent_dim, extra_downsampling, codebook_options
        )
        return build

    return register


def families_taking(option):
    """The names of the registered families that take the codebook option
    `option` (a name of `CODEBOOK_OPTIONS`), in registry order."""
    if option not in CODEBOOK_OPTIONS:
        raise ValueError(
            f"Unknown codebook option {option!r}. Expected one of: {', '.join(CODEBOOK_OPTIONS)}."
        )
    return tuple(name for name, family in FAMILIES.items() if option in family.codebook_options)


@dataclasses.dataclass(frozen=True)
class FamilyParts:
    """What a family's builder receives: the checked arguments of
    `build_autoencoder` (see there) and the standard parts.

    Attributes:
        codebook_options: the `CODEBOOK_OPTIONS` the family takes, by name:
            the values given to `build_autoencoder`, or the defaults.
        decoder: the `ConvDecoder` from the latent grid to images, mirroring
            the encoder's `channels`.
    """

    image_shape: tuple
    latent_dim: int
    channels: tuple
    num_residual_blocks: int
    residual_channels: int | None
    num_embeddings: int
    levels: tuple | None
    depth: int
    beta: float
    kl_weight: float
    seed: int
    name: str
    discriminator_start: int
    discriminator_weight: float
    perceptual_loss: object
    perceptual_weight: float
    codebook_options: dict
    decoder: ConvDecoder

    @property
    def residual_blocks(self):
        """The residual-block arguments of `ConvEncoder` and `ConvDecoder`."""
        return {
            "num_residual_blocks": self.num_residual_blocks,
            "residual_channels": self.residual_channels,
        }

    def encoder(self, latent_channels, channels=None):
        """A `ConvEncoder` to `latent_channels`, with `channels` (default:
        the model's) stride-2 convolutions."""
        channels = self.channels if channels is None else channels
        return ConvEncoder(latent_channels, channels=channels, **self.residual_blocks)

    def adversarial_options(self):
        """The adversarial arguments of `VQGAN` and `AdversarialKLVAE`: a
        `PatchDiscriminator` of as many stride-2 layers as the encoder,
        starting from its first channels (its logits come on the latent
        grid), `discriminator_weight`, `discriminator_start`,
        `perceptual_loss` and `perceptual_weight`."""
        return {
            "discriminator": PatchDiscriminator(
                filters=self.channels[0], num_layers=len(self.channels)
            ),
            "perceptual_loss": self.perceptual_loss,
            "perceptual_weight": self.perceptual_weight,
            "discriminator_weight": self.discriminator_weight,
            "discriminator_start": self.discriminator_start,
        }

    def ema_quantizer(self, embedding_dim, seed=None):
        """An `EMAVectorQuantizer` of `num_embeddings` codes with dead-code
        restarts after 100 steps, a codebook seeded from the first batch and
        the family's `codebook_options`."""
        return EMAVectorQuantizer(
            self.num_embeddings,
            embedding_dim,
            restart_after_steps=100,
            init_from_first_batch=True,
            seed=self.seed if seed is None else seed,
            **self.codebook_options,
        )


# The builders create their layers in a fixed order: layer names and
# initializer seeds follow it, and the shipped presets and seeded runs rely on
# them (the decoder is made first, by `build_autoencoder`).


@register_family("ae", default_latent_dim=4)
def _ae(parts):
    """`Autoencoder`: a deterministic latent."""
    return Autoencoder(parts.encoder(parts.latent_dim), parts.decoder, name=parts.name)


@register_family("vae", default_latent_dim=4)
def _vae(parts):
    """`VAE`; the encoder outputs a mean and a log-variance per channel."""
    return VAE(parts.encoder(2 * parts.latent_dim), parts.decoder, beta=parts.beta, name=parts.name)


@register_family("klvae", default_latent_dim=4)
def _klvae(parts):
    """`KLVAE`, with a small KL weight."""
    encoder = parts.encoder(2 * parts.latent_dim)
    return KLVAE(encoder, parts.decoder, kl_weight=parts.kl_weight, name=parts.name)


# Every codebook option, for the families of one `VectorQuantizer` or
# `EMAVectorQuantizer` per grid.
_ALL_CODEBOOK_OPTIONS = tuple(CODEBOOK_OPTIONS)


@register_family("vqvae", default_latent_dim=64, codebook_options=_ALL_CODEBOOK_OPTIONS)
def _vqvae(parts):
    """`VQVAE` with a gradient-trained codebook."""
    encoder = parts.encoder(parts.latent_dim)
    quantizer = VectorQuantizer(
        parts.num_embeddings, parts.latent_dim, seed=parts.seed, **parts.codebook_options
    )
    return VQVAE(encoder, parts.decoder, quantizer, name=parts.name)


@register_family("ema-vqvae", default_latent_dim=64, codebook_options=_ALL_CODEBOOK_OPTIONS)
def _ema_vqvae(parts):
    """`VQVAE` with an EMA codebook."""
    encoder = parts.encoder(parts.latent_dim)
    return VQVAE(encoder, parts.decoder, parts.ema_quantizer(parts.latent_dim), name=parts.name)


# Only k-means: the levels quantize residuals whose norms shrink level by
# level, which unit-norm codes cannot follow; and the stack has a
# straight-through estimator of its own, so the levels' estimator is unused.
@register_family("rqvae", default_latent_dim=64, codebook_options=("kmeans_init",))
def _rqvae(parts):
    """`RQVAE` with one EMA codebook per level."""
    quantizer = ResidualVectorQuantizer(
        parts.ema_quantizer(parts.latent_dim), depth=parts.depth, seed=parts.seed
    )
    return RQVAE(parts.encoder(parts.latent_dim), parts.decoder, quantizer, name=parts.name)


def fsq_levels(num_embeddings):
    """FSQ levels that give at most `num_embeddings` codes, and close to it:
    channels of 5 levels, most of the paper's recommended levels, and one
    channel of 2 to 9 levels for the rest. For example 16 -> (3, 5) (15
    codes), 512 -> (4, 5, 5, 5) (500), 1024 -> (8, 5, 5, 5) (1000, the
    paper's choice for 2^10).

    Raises:
        ValueError: for fewer than 2 codes.
    """
    num_embeddings = validation.positive_int("num_embeddings", num_embeddings)
    if num_embeddings < 2:
        raise ValueError(f"FSQ needs at least 2 codes. Received: num_embeddings={num_embeddings}")
    fives = 0
    while num_embeddings // 5**fives >= 10:
        fives += 1
    # 2 <= rest <= 9: the loop stops at the first rest below 10, and a rest
    # after a division by 5 is at least 10 // 5.
    return (num_embeddings // 5**fives,) + (5,) * fives


def lfq_bits(num_embeddings):
    """The bits of an LFQ of at most `num_embeddings` codes: floor(log2(K))."""
    num_embeddings = validation.positive_int("num_embeddings", num_embeddings)
    if num_embeddings < 2:
        raise ValueError(f"LFQ needs at least 2 codes. Received: num_embeddings={num_embeddings}")
    return num_embeddings.bit_length() - 1


@register_family(
    "vqvae2", default_latent_dim=64, extra_downsampling=1, codebook_options=_ALL_CODEBOOK_OPTIONS
)
def _vqvae2(parts):
    """`VQVAE2` with EMA codebooks; the top grid is half the bottom one's size."""
    width = parts.channels[-1]
    return VQVAE2(
        bottom_encoder=parts.encoder(width),
        top_encoder=parts.encoder(parts.latent_dim, channels=(width,)),
        top_decoder=ConvDecoder(width, channels=(width,), **parts.residual_blocks),
        decoder=parts.decoder,
        bottom_quantizer=parts.ema_quantizer(parts.latent_dim),
        top_quantizer=parts.ema_quantizer(parts.latent_dim, seed=parts.seed + 1),
        name=parts.name,
    )


@register_family("fsq-vae", default_latent_dim=4)
def _fsq_vae(parts):
    """`VQVAE` with a `FiniteScalarQuantizer` of `levels` (default: from
    `num_embeddings`, see `fsq_levels`), with projections when `latent_dim`
    differs from the number of levels."""
    levels = parts.levels or fsq_levels(parts.num_embeddings)
    quantizer = FiniteScalarQuantizer(levels, embedding_dim=parts.latent_dim)
    return VQVAE(parts.encoder(parts.latent_dim), parts.decoder, quantizer, name=parts.name)


@register_family("lfq-vae", default_latent_dim=9)
def _lfq_vae(parts):
    """`VQVAE` with a `LookupFreeQuantizer` of floor(log2(num_embeddings))
    bits (9 for the default 512 codes), with projections when `latent_dim`
    differs from the bits."""
    quantizer = LookupFreeQuantizer(lfq_bits(parts.num_embeddings), embedding_dim=parts.latent_dim)
    return VQVAE(parts.encoder(parts.latent_dim), parts.decoder, quantizer, name=parts.name)


@register_family("gumbel-vae", default_latent_dim=64)
def _gumbel_vae(parts):
    """`VQVAE` with a straight-through `GumbelQuantizer` of `num_embeddings`
    codes (anneal its temperature with
    `vqkeras.callbacks.GumbelTemperatureSchedule`)."""
    quantizer = GumbelQuantizer(
        parts.num_embeddings, parts.latent_dim, straight_through=True, seed=parts.seed
    )
    return VQVAE(parts.encoder(parts.latent_dim), parts.decoder, quantizer, name=parts.name)


@register_family("vqgan", default_latent_dim=64, codebook_options=_ALL_CODEBOOK_OPTIONS)
def _vqgan(parts):
    """`VQGAN`: the "ema-vqvae" model with `parts.adversarial_options()`."""
    encoder = parts.encoder(parts.latent_dim)
    quantizer = parts.ema_quantizer(parts.latent_dim)
    return VQGAN(encoder, parts.decoder, quantizer, **parts.adversarial_options(), name=parts.name)


@register_family("adversarial-klvae", default_latent_dim=4)
def _adversarial_klvae(parts):
    """`AdversarialKLVAE`: the "klvae" model with `parts.adversarial_options()`."""
    encoder = parts.encoder(2 * parts.latent_dim)
    return AdversarialKLVAE(
        encoder,
        parts.decoder,
        **parts.adversarial_options(),
        kl_weight=parts.kl_weight,
        name=parts.name,
    )


def _codebook_options(spec, **options):
    """The codebook options `spec`'s family takes, by name; refuses the
    others unless they have their default value."""
    refused = {
        name: value
        for name, value in options.items()
        if name not in spec.codebook_options and value != CODEBOOK_OPTIONS[name]
    }
    if refused:
        takers = [
            f"{family.name} ({', '.join(family.codebook_options)})"
            for family in FAMILIES.values()
            if family.codebook_options
        ]
        received = ", ".join(f"{name}={value!r}" for name, value in refused.items())
        raise ValueError(
            f"Family {spec.name!r} does not take {', '.join(refused)}. The families with "
            f"codebook options: {'; '.join(takers)}. Received: {received}."
        )
    return {name: options[name] for name in spec.codebook_options}


def build_autoencoder(
    family,
    image_shape,
    *,
    latent_dim=None,
    channels=(64, 128),
    num_residual_blocks=1,
    residual_channels=None,
    num_embeddings=512,
    levels=None,
    depth=4,
    beta=1.0,
    kl_weight=1e-6,
    seed=0,
    discriminator_start=0,
    discriminator_weight=0.8,
    perceptual_loss=None,
    perceptual_weight=1.0,
    code_dim=None,
    normalize_codes=False,
    kmeans_init=False,
    gradient_estimator="straight_through",
    name=None,
):
    """A built, uncompiled autoencoder of `family` for images of `image_shape`.

    Args:
        family: a name of `FAMILIES`: "ae" (`Autoencoder`), "vae" (`VAE`),
            "klvae" (`KLVAE`), "vqvae" (`VQVAE`, gradient codebook),
            "ema-vqvae" (`VQVAE`, EMA codebook with dead-code restarts),
            "vqgan" (`VQGAN`: "ema-vqvae" with a `PatchDiscriminator`),
            "adversarial-klvae" (`AdversarialKLVAE`: "klvae" with one),
            "rqvae" (`RQVAE`, EMA codebooks per level), "vqvae2" (`VQVAE2`,
            EMA codebooks; the top grid is half the bottom one's size),
            "fsq-vae" (`VQVAE`, `FiniteScalarQuantizer`), "lfq-vae"
            (`VQVAE`, `LookupFreeQuantizer`), "gumbel-vae" (`VQVAE`,
            straight-through `GumbelQuantizer`), or one registered with
            `register_family`.
        image_shape: `(height, width, channels)`; height and width must be
            multiples of `2 ** len(channels)` (times 2 for "vqvae2").
        latent_dim: channels of the latent grid: of the code vectors for the
            VQ families, of the latent sample for the VAEs (the encoder
            outputs twice as many: mean and log-variance). Default: the
            family's (4 for the continuous families and "fsq-vae", 9 for
            "lfq-vae", 64 for the other discrete ones).
        channels: channels of the encoder's stride-2 convolutions (their
            count sets the downsampling factor); the decoder mirrors them.
        num_residual_blocks: residual blocks in the encoder and the decoder.
        residual_channels: hidden channels of those blocks (default: a
            quarter of the widest of `channels`).
        num_embeddings: codebook size K of the VQ families (per level);
            for "fsq-vae" and "lfq-vae", the most codes they may have: FSQ
            levels from `fsq_levels(K)` unless `levels` are given, LFQ
            with floor(log2(K)) bits.
        levels: the FSQ levels of "fsq-vae", e.g. (8, 5, 5, 5) (default:
            from `num_embeddings`).
        depth: quantization levels of "rqvae".
        beta: KL weight of "vae".
        kl_weight: KL weight of "klvae" and "adversarial-klvae".
        seed: seed of the codebook initialization and restarts.
        discriminator_start: the adversarial families ("vqgan",
            "adversarial-klvae"): training steps before the adversarial
            terms count.
        discriminator_weight: the adversarial families: factor of the
            adaptive weight of the autoencoder's adversarial term (0: the
            discriminator trains, the autoencoder ignores it).
        perceptual_loss: the adversarial families: a `PerceptualLoss` (e.g.
            `PerceptualLoss.from_classifier("mnist_classifier")`), or None
            for none.
        perceptual_weight: the adversarial families: the factor of the
            perceptual term against the L1 pixel term (the fidelity to
            pixels traded for fidelity in the feature network).
        code_dim: the codebook options (`CODEBOOK_OPTIONS`), passed to the
            `VectorQuantizer` or `EMAVectorQuantizer` of "vqvae",
            "ema-vqvae", "vqgan" and both levels of "vqvae2": the width of
            the codes, with projections in and out when it differs from
            `latent_dim` (None: `latent_dim`, no projections).
        normalize_codes: l2-normalised inputs and codes (cosine similarity).
        kmeans_init: codebooks initialised by k-means on the first training
            batch; "rqvae" takes this option too (on every level), and only
            this one.
        gradient_estimator: "straight_through" or "rotation" (the rotation
            trick).
        name: model name (default: the family, "-" replaced by "_").

    Raises:
        ValueError: for an unknown family, bad sizes, or a codebook option
            other than its default for a family that does not take it.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}. Expected one of: {', '.join(FAMILIES)}.")
    spec = FAMILIES[family]
    image_shape = validation.positive_int_tuple("image_shape", image_shape)
    channels = validation.positive_int_tuple("channels", channels)
    if len(image_shape) != 3:
        raise ValueError(
            f"`image_shape` must be (height, width, channels). Received: {image_shape}."
        )
    factor = 2 ** (len(channels) + spec.extra_downsampling)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"A {family} with {len(channels)} downsamplings needs image height and width "
            f"that are multiples of {factor}. Received: image_shape={image_shape}."
        )
    latent_dim = validation.positive_int(
        "latent_dim", spec.default_latent_dim if latent_dim is None else latent_dim
    )
    codebook_options = _codebook_options(
        spec,
        code_dim=code_dim,
        normalize_codes=normalize_codes,
        kmeans_init=kmeans_init,
        gradient_estimator=gradient_estimator,
    )
    parts = FamilyParts(
        image_shape=image_shape,
        latent_dim=latent_dim,
        channels=channels,
        num_residual_blocks=num_residual_blocks,
        residual_channels=residual_channels,
        num_embeddings=num_embeddings,
        levels=None if levels is None else check_levels(levels),
        depth=depth,
        beta=beta,
        kl_weight=kl_weight,
        seed=seed,
        name=name or family.replace("-", "_"),
        discriminator_start=discriminator_start,
        discriminator_weight=discriminator_weight,
        perceptual_loss=perceptual_loss,
        perceptual_weight=perceptual_weight,
        codebook_options=codebook_options,
        decoder=ConvDecoder(
            image_shape[-1],
            channels=channels[::-1],
            num_residual_blocks=num_residual_blocks,
            residual_channels=residual_channels,
        ),
    )
    model = spec.build(parts)
    model.build((None, *image_shape))
    return model
