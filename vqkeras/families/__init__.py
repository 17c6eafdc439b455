"""Families: the registry of every model kind that `vqkeras train`, the zoo's
recipes and `build_autoencoder` train and build (autoencoders and priors),
and of the encoder/decoder architectures the autoencoders are built with.

    from vqkeras import families
    families.FAMILIES["klvae"].Options()        # KLOptions(latent_dim=4, kl_weight=1e-06)
    families.get_family("pixelcnn-prior").summary

See `vqkeras.families.registry` for what an entry declares, and
docs/architecture.md for the files that adding one takes.
"""

from vqkeras.families import autoencoders, priors  # noqa: F401  (they register)
from vqkeras.families.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    get_architecture,
    register_architecture,
)
from vqkeras.families.registry import (
    FAMILIES,
    Family,
    families_of_kind,
    get_family,
    register_family,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "FAMILIES",
    "Family",
    "families_of_kind",
    "get_architecture",
    "get_family",
    "register_architecture",
    "register_family",
]
