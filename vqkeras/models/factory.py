"""One-call construction of each autoencoder family from a few sizes.

`build_autoencoder("ema-vqvae", (32, 32, 3))` gives a built, uncompiled model
made of the standard parts (`ConvEncoder`, `ConvDecoder` and a quantizer), so
that `vqkeras train` and the benchmarks compare families built the same way.
Models with other parts are built by calling the classes directly.
"""

from vqkeras import validation
from vqkeras.layers import (
    ConvDecoder,
    ConvEncoder,
    EMAVectorQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from vqkeras.models.autoencoder import Autoencoder
from vqkeras.models.klvae import KLVAE
from vqkeras.models.rqvae import RQVAE
from vqkeras.models.vae import VAE
from vqkeras.models.vqvae import VQVAE
from vqkeras.models.vqvae2 import VQVAE2

FAMILIES = ("ae", "vae", "klvae", "vqvae", "ema-vqvae", "rqvae", "vqvae2")
CONTINUOUS_FAMILIES = ("ae", "vae", "klvae")
# Latent channels when none are given: few for continuous latents (as the
# AutoencoderKL of latent diffusion), more for code vectors.
DEFAULT_LATENT_DIM = {"continuous": 4, "discrete": 64}


def build_autoencoder(
    family,
    image_shape,
    *,
    latent_dim=None,
    channels=(64, 128),
    num_residual_blocks=1,
    residual_channels=None,
    num_embeddings=512,
    depth=4,
    beta=1.0,
    kl_weight=1e-6,
    seed=0,
    name=None,
):
    """A built, uncompiled autoencoder of `family` for images of `image_shape`.

    Args:
        family: one of `FAMILIES`: "ae" (`Autoencoder`), "vae" (`VAE`),
            "klvae" (`KLVAE`), "vqvae" (`VQVAE`, gradient codebook),
            "ema-vqvae" (`VQVAE`, EMA codebook with dead-code restarts),
            "rqvae" (`RQVAE`, EMA codebooks per level), "vqvae2" (`VQVAE2`,
            EMA codebooks; the top grid is half the bottom one's size).
        image_shape: `(height, width, channels)`; height and width must be
            multiples of `2 ** len(channels)` (times 2 for "vqvae2").
        latent_dim: channels of the latent grid: of the code vectors for the
            VQ families, of the latent sample for the VAEs (the encoder
            outputs twice as many: mean and log-variance). Default 4 for the
            continuous families, 64 for the discrete ones.
        channels: channels of the encoder's stride-2 convolutions (their
            count sets the downsampling factor); the decoder mirrors them.
        num_residual_blocks: residual blocks in the encoder and the decoder.
        residual_channels: hidden channels of those blocks (default: a
            quarter of the widest of `channels`).
        num_embeddings: codebook size K of the VQ families (per level).
        depth: quantization levels of "rqvae".
        beta: KL weight of "vae".
        kl_weight: KL weight of "klvae".
        seed: seed of the codebook initialization and restarts.
        name: model name (default: the family).
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}. Expected one of: {', '.join(FAMILIES)}.")
    image_shape = validation.positive_int_tuple("image_shape", image_shape)
    channels = validation.positive_int_tuple("channels", channels)
    if len(image_shape) != 3:
        raise ValueError(
            f"`image_shape` must be (height, width, channels). Received: {image_shape}."
        )
    factor = 2 ** (len(channels) + (family == "vqvae2"))
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"A {family} with {len(channels)} downsamplings needs image height and width "
            f"that are multiples of {factor}. Received: image_shape={image_shape}."
        )
    kind = "continuous" if family in CONTINUOUS_FAMILIES else "discrete"
    latent_dim = validation.positive_int(
        "latent_dim", DEFAULT_LATENT_DIM[kind] if latent_dim is None else latent_dim
    )
    name = name or family.replace("-", "_")

    blocks = {"num_residual_blocks": num_residual_blocks, "residual_channels": residual_channels}

    def encoder(dim):
        return ConvEncoder(dim, channels=channels, **blocks)

    decoder = ConvDecoder(image_shape[-1], channels=channels[::-1], **blocks)

    def ema_quantizer(dim, level_seed=seed):
        return EMAVectorQuantizer(
            num_embeddings,
            dim,
            restart_after_steps=100,
            init_from_first_batch=True,
            seed=level_seed,
        )

    if family == "ae":
        model = Autoencoder(encoder(latent_dim), decoder, name=name)
    elif family == "vae":
        model = VAE(encoder(2 * latent_dim), decoder, beta=beta, name=name)
    elif family == "klvae":
        model = KLVAE(encoder(2 * latent_dim), decoder, kl_weight=kl_weight, name=name)
    elif family == "vqvae":
        model = VQVAE(
            encoder(latent_dim), decoder, VectorQuantizer(num_embeddings, latent_dim), name=name
        )
    elif family == "ema-vqvae":
        model = VQVAE(encoder(latent_dim), decoder, ema_quantizer(latent_dim), name=name)
    elif family == "rqvae":
        quantizer = ResidualVectorQuantizer(ema_quantizer(latent_dim), depth=depth, seed=seed)
        model = RQVAE(encoder(latent_dim), decoder, quantizer, name=name)
    else:
        width = channels[-1]
        model = VQVAE2(
            bottom_encoder=ConvEncoder(width, channels=channels, **blocks),
            top_encoder=ConvEncoder(latent_dim, channels=(width,), **blocks),
            top_decoder=ConvDecoder(width, channels=(width,), **blocks),
            decoder=decoder,
            bottom_quantizer=ema_quantizer(latent_dim),
            top_quantizer=ema_quantizer(latent_dim, level_seed=seed + 1),
            name=name,
        )
    model.build((None, *image_shape))
    return model
