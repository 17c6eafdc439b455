"""Recipe: a KL-VAE (the AutoencoderKL of latent diffusion) on CIFAR-10: an 8x8x4 Gaussian latent.

Downsampling 4, a KL weight of 1e-6, and the latents' `scaling_factor`
computed on the training images. Trains on the CIFAR-10 training images minus
the last 5000 (validation), measures on the 10000 test images, and writes
`--out/preset/`: what zoo/klvae_cifar10/ ships. The training and its outputs
are those of `zoo/autoencoder_recipe.py` (resumable: rerun the same command
after an interruption). The shipped preset was trained on a JPEG-derived copy
of CIFAR-10 (quality 75), not on the canonical pixels.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/klvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/klvae_cifar10 --epochs 10
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.autoencoder_recipe import main
from vqkeras.zoo.vqvae_cifar10.recipe import RECIPE as VQVAE_CIFAR10

# vqvae_cifar10's encoder, decoder and data; a 4-channel Gaussian latent.
RECIPE = dataclasses.replace(
    VQVAE_CIFAR10,
    family="klvae",
    name="klvae_cifar10",
    options={"latent_dim": 4, "kl_weight": 1e-6},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
