"""One-call construction of each autoencoder family from a few sizes.

`build_autoencoder("ema-vqvae", (32, 32, 3))` gives a built, uncompiled model
of a family of the registry (`vqkeras.families`), made with a registered
encoder/decoder architecture ("conv" by default), so that `vqkeras train`, the
zoo's recipes and the benchmarks build every family the same way. Models with
other parts are built by calling the classes directly.
"""

from vqkeras import validation
from vqkeras.families import DEFAULT_ARCHITECTURE, get_architecture, get_family
from vqkeras.families.autoencoders import AutoencoderParts, fsq_levels, lfq_bits

__all__ = ["build_autoencoder", "fsq_levels", "lfq_bits"]


def build_autoencoder(
    family, image_shape, *, architecture=DEFAULT_ARCHITECTURE, seed=0, name=None, **options
):
    """A built, uncompiled autoencoder of `family` for images of `image_shape`.

    Args:
        family: an autoencoder family of the registry: "ae", "vae", "klvae",
            "vqvae", "ema-vqvae", "rqvae", "vqvae2", "fsq-vae", "lfq-vae",
            "gumbel-vae", "vqgan", "adversarial-klvae", or one registered
            with `vqkeras.families.register_family`.
        image_shape: `(height, width, channels)`; height and width must be
            multiples of the architecture's downsampling (times 2 for
            "vqvae2").
        architecture: a name of `vqkeras.families.ARCHITECTURES`.
        seed: seed of the codebook initialization and restarts.
        name: model name (default: the family, "-" replaced by "_").
        **options: the family's options (`FAMILIES[family].Options`, e.g.
            `latent_dim`, `num_embeddings`, `kl_weight`) and the
            architecture's (e.g. `channels`, `num_residual_blocks`), by name;
            the others take their defaults.

    Raises:
        ValueError: for an unknown family or architecture, an option neither
            of them has, or bad values.

    Example:

    ```python
    model = build_autoencoder("ema-vqvae", (28, 28, 1), channels=(32, 64), num_embeddings=128)
    ```
    """
    spec = get_family(family, kind="autoencoder")
    architecture_class = get_architecture(architecture)
    image_shape = validation.positive_int_tuple("image_shape", image_shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"`image_shape` must be (height, width, channels). Received: {image_shape}."
        )
    architecture_names = set(architecture_class.Options.names())
    family_options = {k: v for k, v in options.items() if k not in architecture_names}
    unknown = sorted(set(family_options) - set(spec.Options.names()))
    if unknown:
        raise ValueError(
            f"Neither family {family!r} nor architecture {architecture!r} has the option "
            f"{', '.join(map(repr, unknown))}. The family's options: "
            f"{', '.join(spec.Options.names())}; the architecture's: "
            f"{', '.join(architecture_class.Options.names())}."
        )
    layers = architecture_class(
        architecture_class.Options.from_dict(
            {k: v for k, v in options.items() if k in architecture_names},
            f"architecture {architecture!r}",
        )
    )
    family_options = spec.options(family_options)
    factor = layers.downsampling * 2**spec.extra_downsampling
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"A {family} with downsampling {factor} needs image height and width that are "
            f"multiples of {factor}. Received: image_shape={image_shape}."
        )
    parts = AutoencoderParts(
        image_shape=image_shape,
        architecture=layers,
        seed=seed,
        name=name or family.replace("-", "_"),
        decoder=layers.decoder(image_shape[-1]),
    )
    model = spec.build(parts, family_options)
    model.build((None, *image_shape))
    return model
