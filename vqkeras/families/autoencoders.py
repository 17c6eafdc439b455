"""The autoencoder families: each one's options, how it builds, and what its
training needs (see `vqkeras.families.registry`).

A family builds its model from `AutoencoderParts`: the image shape, the
registered architecture (`vqkeras.families.architectures`), the seed, the
name and the decoder, which is made first. A new family is one class here,
for example a VQ-VAE whose EMA codebook is never restarted:

    @register_family("plain-ema-vqvae")
    class PlainEMAVQVAEFamily(AutoencoderFamily):
        '''VQVAE with an EMA codebook and no dead-code restarts.'''
        Options = CodebookOptions

        def build(self, parts, options):
            quantizer = EMAVectorQuantizer(options.num_embeddings, options.latent_dim)
            encoder = parts.encoder(options.latent_dim)
            return VQVAE(encoder, parts.decoder, quantizer, name=parts.name)
"""

import dataclasses

from vqkeras import validation
from vqkeras.callbacks import GumbelTemperatureSchedule
from vqkeras.families.options import (
    Options,
    float_pair,
    int_list,
    non_negative_float,
    one_of,
    option,
    positive_float,
)
from vqkeras.families.registry import Family, register_family
from vqkeras.layers import (
    EMAVectorQuantizer,
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    PerceptualLoss,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from vqkeras.layers.base_vector_quantizer import GRADIENT_ESTIMATORS
from vqkeras.layers.finite_scalar_quantizer import check_levels
from vqkeras.models.adversarial_klvae import AdversarialKLVAE
from vqkeras.models.autoencoder import Autoencoder
from vqkeras.models.klvae import KLVAE
from vqkeras.models.rqvae import RQVAE
from vqkeras.models.vae import VAE
from vqkeras.models.vqgan import VQGAN
from vqkeras.models.vqvae import VQVAE
from vqkeras.models.vqvae2 import VQVAE2

# The optimizer group of the adversarial models' discriminator.
DISCRIMINATOR_GROUP = "discriminator"
# Dead codes of the EMA codebooks are restarted after this many steps unused.
RESTART_AFTER_STEPS = 100


@dataclasses.dataclass(frozen=True)
class AutoencoderParts:
    """What an autoencoder family builds from.

    Attributes:
        image_shape: `(height, width, channels)` of the images.
        architecture: the architecture instance (`encoder`, `decoder`, ...).
        seed: seed of codebook initialisations and restarts.
        name: the model's name.
        decoder: the architecture's decoder to images, made before the
            family's layers (layer names and initializer seeds follow the
            order of creation, and the shipped presets rely on it).
    """

    image_shape: tuple
    architecture: object
    seed: int
    name: str
    decoder: object

    def encoder(self, latent_channels):
        return self.architecture.encoder(latent_channels)


class AutoencoderFamily(Family):
    """Base of the autoencoder families: `build(parts, options)`."""

    kind = "autoencoder"
    # Halvings of the image size beyond the architecture's.
    extra_downsampling = 0

    def build(self, parts, options):
        raise NotImplementedError


def _latent_dim(default):
    return option(
        default,
        "channels of the latent grid: of the code vectors for the VQ families, of the latent "
        "sample for the VAEs (whose encoders output twice as many: mean and log-variance)",
        parse=int,
        metavar="N",
    )


@dataclasses.dataclass(frozen=True)
class LatentOptions(Options):
    latent_dim: int = _latent_dim(4)

    def __post_init__(self):
        self.check("latent_dim", validation.positive_int)


@dataclasses.dataclass(frozen=True)
class KLOptions(LatentOptions):
    kl_weight: float = option(1e-6, "weight of the KL term", parse=float, metavar="W")

    def __post_init__(self):
        super().__post_init__()
        self.check("kl_weight", non_negative_float)


@dataclasses.dataclass(frozen=True)
class VAEOptions(KLOptions):
    kl_weight: float = option(1.0, "weight of the KL term", parse=float, metavar="W")


@dataclasses.dataclass(frozen=True)
class CodebookSizeOptions(LatentOptions):
    latent_dim: int = _latent_dim(64)
    num_embeddings: int = option(512, "codes per codebook (K)", parse=int, metavar="K")

    def __post_init__(self):
        super().__post_init__()
        self.check("num_embeddings", validation.positive_int)


@dataclasses.dataclass(frozen=True)
class CommitmentOptions(CodebookSizeOptions):
    commitment_cost: float = option(0.25, "weight of the commitment loss", parse=float, metavar="W")

    def __post_init__(self):
        super().__post_init__()
        self.check("commitment_cost", non_negative_float)


@dataclasses.dataclass(frozen=True)
class RQOptions(CommitmentOptions):
    depth: int = option(4, "quantization levels", parse=int, metavar="D")
    kmeans_init: bool = option(
        False, "codebooks initialised by k-means on the first training batch"
    )

    def __post_init__(self):
        super().__post_init__()
        self.check("depth", validation.positive_int)


@dataclasses.dataclass(frozen=True)
class CodebookOptions(CommitmentOptions):
    code_dim: int | None = option(
        None,
        "width of the codes, with projections in and out of the latent channels "
        "(none: the latent channels, no projections)",
        parse=int,
        metavar="N",
    )
    normalize_codes: bool = option(False, "l2-normalised latents and codes (cosine similarity)")
    kmeans_init: bool = option(
        False, "codebooks initialised by k-means on the first training batch"
    )
    gradient_estimator: str = option(
        "straight_through",
        "gradient through the quantizer: the straight-through estimator or the rotation trick",
        parse=str,
        choices=GRADIENT_ESTIMATORS,
    )

    def __post_init__(self):
        super().__post_init__()
        self.check("code_dim", validation.positive_int, optional=True)
        self.check("gradient_estimator", one_of, GRADIENT_ESTIMATORS)

    def codebook(self):
        """The codebook arguments of `VectorQuantizer` and `EMAVectorQuantizer`."""
        return {
            "commitment_cost": self.commitment_cost,
            "code_dim": self.code_dim,
            "normalize_codes": self.normalize_codes,
            "kmeans_init": self.kmeans_init,
            "gradient_estimator": self.gradient_estimator,
        }


def ema_quantizer(options, embedding_dim, seed, **codebook):
    """An `EMAVectorQuantizer` of `options.num_embeddings` codes with dead-code
    restarts and a codebook seeded from the first batch."""
    return EMAVectorQuantizer(
        options.num_embeddings,
        embedding_dim,
        restart_after_steps=RESTART_AFTER_STEPS,
        init_from_first_batch=True,
        seed=seed,
        **codebook,
    )


# The builders create their layers in a fixed order: layer names and
# initializer seeds follow it, and the shipped presets and seeded runs rely on it.


@register_family("ae")
class AEFamily(AutoencoderFamily):
    """`Autoencoder`: a deterministic latent."""

    Options = LatentOptions

    def build(self, parts, options):
        return Autoencoder(parts.encoder(options.latent_dim), parts.decoder, name=parts.name)


@register_family("vae")
class VAEFamily(AutoencoderFamily):
    """`VAE`: a Gaussian latent with a standard-normal prior."""

    Options = VAEOptions

    def build(self, parts, options):
        encoder = parts.encoder(2 * options.latent_dim)
        return VAE(encoder, parts.decoder, kl_weight=options.kl_weight, name=parts.name)


class MeasuresScalingFactor:
    """Mixin of the KL-VAE families: after training, the scaling factor of the
    latents (1 / their std over the training images, as latent diffusion
    uses) is measured and stored in the model, so that the preset ships it."""

    def after_training(self, model, images, *, seed):
        model.scaling_factor = model.compute_scaling_factor(images, seed=seed)
        return {"scaling_factor": model.scaling_factor}


@register_family("klvae")
class KLVAEFamily(MeasuresScalingFactor, AutoencoderFamily):
    """`KLVAE`: the AutoencoderKL of latent diffusion, with a small KL weight."""

    Options = KLOptions

    def build(self, parts, options):
        encoder = parts.encoder(2 * options.latent_dim)
        return KLVAE(encoder, parts.decoder, kl_weight=options.kl_weight, name=parts.name)


@register_family("vqvae")
class VQVAEFamily(AutoencoderFamily):
    """`VQVAE` with a gradient-trained codebook."""

    Options = CodebookOptions

    def build(self, parts, options):
        encoder = parts.encoder(options.latent_dim)
        quantizer = VectorQuantizer(
            options.num_embeddings, options.latent_dim, seed=parts.seed, **options.codebook()
        )
        return VQVAE(encoder, parts.decoder, quantizer, name=parts.name)


@register_family("ema-vqvae")
class EMAVQVAEFamily(AutoencoderFamily):
    """`VQVAE` with an EMA codebook, dead-code restarts and a first-batch initialisation."""

    Options = CodebookOptions

    def build(self, parts, options):
        encoder = parts.encoder(options.latent_dim)
        quantizer = ema_quantizer(options, options.latent_dim, parts.seed, **options.codebook())
        return VQVAE(encoder, parts.decoder, quantizer, name=parts.name)


# Only k-means: the levels quantize residuals whose norms shrink level by
# level, which unit-norm codes cannot follow; and the stack has a
# straight-through estimator of its own, so the levels' estimator is unused.
@register_family("rqvae")
class RQVAEFamily(AutoencoderFamily):
    """`RQVAE`: residual quantization, one EMA codebook per level."""

    Options = RQOptions

    def build(self, parts, options):
        level = ema_quantizer(
            options,
            options.latent_dim,
            parts.seed,
            commitment_cost=options.commitment_cost,
            kmeans_init=options.kmeans_init,
        )
        quantizer = ResidualVectorQuantizer(level, depth=options.depth, seed=parts.seed)
        return RQVAE(parts.encoder(options.latent_dim), parts.decoder, quantizer, name=parts.name)


@register_family("vqvae2")
class VQVAE2Family(AutoencoderFamily):
    """`VQVAE2`: two grids of EMA codes; the top grid is half the bottom one's size."""

    Options = CodebookOptions
    extra_downsampling = 1

    def build(self, parts, options):
        architecture = parts.architecture
        return VQVAE2(
            bottom_encoder=parts.encoder(architecture.width),
            top_encoder=architecture.extra_encoder_stage(options.latent_dim),
            top_decoder=architecture.extra_decoder_stage(architecture.width),
            decoder=parts.decoder,
            bottom_quantizer=ema_quantizer(
                options, options.latent_dim, parts.seed, **options.codebook()
            ),
            top_quantizer=ema_quantizer(
                options, options.latent_dim, parts.seed + 1, **options.codebook()
            ),
            name=parts.name,
        )


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


@dataclasses.dataclass(frozen=True)
class FSQOptions(CodebookSizeOptions):
    latent_dim: int = _latent_dim(4)
    num_embeddings: int = option(
        512, "the most codes: levels from fsq_levels(K) unless --levels", parse=int, metavar="K"
    )
    levels: tuple | None = option(
        None,
        "levels per channel, e.g. 8,5,5,5 (none: from the number of codes)",
        parse=int_list,
        metavar="L1,L2,...",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.levels is not None:
            object.__setattr__(self, "levels", check_levels(self.levels))


@register_family("fsq-vae")
class FSQVAEFamily(AutoencoderFamily):
    """`VQVAE` with a `FiniteScalarQuantizer` (projections when the latent
    channels differ from the number of levels)."""

    Options = FSQOptions

    def build(self, parts, options):
        levels = options.levels or fsq_levels(options.num_embeddings)
        quantizer = FiniteScalarQuantizer(levels, embedding_dim=options.latent_dim)
        return VQVAE(parts.encoder(options.latent_dim), parts.decoder, quantizer, name=parts.name)


@dataclasses.dataclass(frozen=True)
class LFQOptions(CodebookSizeOptions):
    latent_dim: int = _latent_dim(9)
    num_embeddings: int = option(512, "the most codes: floor(log2(K)) bits", parse=int, metavar="K")


@register_family("lfq-vae")
class LFQVAEFamily(AutoencoderFamily):
    """`VQVAE` with a `LookupFreeQuantizer` of floor(log2(K)) bits
    (projections when the latent channels differ from the bits)."""

    Options = LFQOptions

    def build(self, parts, options):
        bits = lfq_bits(options.num_embeddings)
        quantizer = LookupFreeQuantizer(bits, embedding_dim=options.latent_dim)
        return VQVAE(parts.encoder(options.latent_dim), parts.decoder, quantizer, name=parts.name)


@dataclasses.dataclass(frozen=True)
class GumbelOptions(CodebookSizeOptions):
    kl_weight: float = option(
        5e-4, "weight of the KL term to the uniform prior over codes", parse=float, metavar="W"
    )
    # DALL-E's range.
    temperatures: tuple = option(
        (1.0, 1.0 / 16),
        "Gumbel-softmax temperatures of the first step and of the end of the anneal",
        parse=float_pair,
        metavar="START,END",
    )
    anneal_epochs: int | None = option(
        None,
        "epochs of the exponential anneal (none: all the run's epochs, recorded so that a "
        "resumed run keeps its schedule)",
        parse=int,
        metavar="EPOCHS",
    )

    def __post_init__(self):
        super().__post_init__()
        self.check("kl_weight", non_negative_float)
        temperatures = tuple(self.temperatures)
        if len(temperatures) != 2:
            raise ValueError(
                f"`temperatures` must be (start, end). Received: temperatures={self.temperatures!r}"
            )
        object.__setattr__(
            self, "temperatures", tuple(positive_float("temperatures", t) for t in temperatures)
        )
        self.check("anneal_epochs", validation.positive_int, optional=True)


@register_family("gumbel-vae")
class GumbelVAEFamily(AutoencoderFamily):
    """`VQVAE` with a straight-through `GumbelQuantizer`, its temperature
    annealed exponentially per step (`GumbelTemperatureSchedule`)."""

    Options = GumbelOptions

    def build(self, parts, options):
        quantizer = GumbelQuantizer(
            options.num_embeddings,
            options.latent_dim,
            temperature=options.temperatures[0],
            kl_weight=options.kl_weight,
            straight_through=True,
            seed=parts.seed,
        )
        return VQVAE(parts.encoder(options.latent_dim), parts.decoder, quantizer, name=parts.name)

    def resolve(self, options, *, epochs):
        if options.anneal_epochs is not None:
            return options
        return dataclasses.replace(options, anneal_epochs=epochs)

    def callbacks(self, options, *, steps_per_epoch):
        start, end = options.temperatures
        return [
            GumbelTemperatureSchedule(
                (options.anneal_epochs or 1) * steps_per_epoch,
                initial_temperature=start,
                final_temperature=end,
            )
        ]


@dataclasses.dataclass(frozen=True)
class AdversarialOptions(Options):
    discriminator_start: int = option(
        0, "training steps before the adversarial terms count", parse=int, metavar="STEPS"
    )
    adversarial_weight: float = option(
        0.8,
        "factor of the adaptive weight of the autoencoder's adversarial term (0: the "
        "discriminator trains, the autoencoder ignores it)",
        parse=float,
        metavar="W",
    )
    perceptual_features: str | None = option(
        None,
        "a perceptual loss in the Conv2D features of this classifier preset, which takes "
        "images of the training images' size (e.g. mnist_classifier for 28x28 digits)",
        parse=str,
        metavar="PRESET_OR_DIR",
    )
    perceptual_weight: float = option(
        1.0,
        "factor of the perceptual loss against the L1 pixel loss (needs perceptual features)",
        parse=float,
        metavar="W",
    )
    discriminator_learning_rate: float | None = option(
        None,
        "the discriminator's initial learning rate, with the same decay (none: the run's)",
        parse=float,
        metavar="RATE",
    )

    def __post_init__(self):
        super().__post_init__()
        self.check("discriminator_start", validation.non_negative_int)
        self.check("adversarial_weight", non_negative_float)
        self.check("perceptual_weight", positive_float)
        self.check("discriminator_learning_rate", positive_float, optional=True)
        if self.perceptual_weight != 1.0 and self.perceptual_features is None:
            raise ValueError(
                "`perceptual_weight` weighs the loss that `perceptual_features` adds. "
                f"Received perceptual_weight={self.perceptual_weight} without perceptual_features."
            )


class Adversarial:
    """Mixin of the families trained against a discriminator: its layers and
    options, and the discriminator's own learning rate."""

    def adversarial_arguments(self, parts, options):
        perceptual_loss = None
        if options.perceptual_features is not None:
            perceptual_loss = PerceptualLoss.from_classifier(options.perceptual_features)
        return {
            "discriminator": parts.architecture.discriminator(),
            "perceptual_loss": perceptual_loss,
            "perceptual_weight": options.perceptual_weight,
            "adversarial_weight": options.adversarial_weight,
            "discriminator_start": options.discriminator_start,
        }

    def group_learning_rates(self, options):
        if options.discriminator_learning_rate is None:
            return {}
        return {DISCRIMINATOR_GROUP: options.discriminator_learning_rate}


# How a VQGAN's codebook learns.
CODEBOOK_UPDATES = ("ema", "gradient")


@dataclasses.dataclass(frozen=True)
class VQGANOptions(AdversarialOptions, CodebookOptions):
    codebook_update: str = option(
        "ema",
        "how the codebook learns: moving averages of its latents with dead-code restarts, or "
        "gradients of the codebook loss (taming's, and a converted VQGAN's: vqkeras convert)",
        parse=str,
        choices=CODEBOOK_UPDATES,
    )

    def __post_init__(self):
        super().__post_init__()
        self.check("codebook_update", one_of, CODEBOOK_UPDATES)


@register_family("vqgan")
class VQGANFamily(Adversarial, AutoencoderFamily):
    """`VQGAN`: the ema-vqvae model (or the vqvae one, with a gradient-trained
    codebook) with a patch discriminator (its own Adam) and an optional
    perceptual loss; its preset holds the inference VQVAE."""

    Options = VQGANOptions

    def build(self, parts, options):
        encoder = parts.encoder(options.latent_dim)
        if options.codebook_update == "ema":
            quantizer = ema_quantizer(options, options.latent_dim, parts.seed, **options.codebook())
        else:
            quantizer = VectorQuantizer(
                options.num_embeddings, options.latent_dim, seed=parts.seed, **options.codebook()
            )
        return VQGAN(
            encoder,
            parts.decoder,
            quantizer,
            **self.adversarial_arguments(parts, options),
            name=parts.name,
        )


@dataclasses.dataclass(frozen=True)
class AdversarialKLOptions(AdversarialOptions, KLOptions):
    pass


@register_family("adversarial-klvae")
class AdversarialKLVAEFamily(MeasuresScalingFactor, Adversarial, AutoencoderFamily):
    """`AdversarialKLVAE`: the klvae model with a patch discriminator, as
    latent diffusion trains its AutoencoderKL; its preset holds the KLVAE."""

    Options = AdversarialKLOptions

    def build(self, parts, options):
        encoder = parts.encoder(2 * options.latent_dim)
        return AdversarialKLVAE(
            encoder,
            parts.decoder,
            **self.adversarial_arguments(parts, options),
            kl_weight=options.kl_weight,
            name=parts.name,
        )
