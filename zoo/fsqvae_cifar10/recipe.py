"""Recipe: an FSQ VQ-VAE on CIFAR-10 (an 8x8 grid of codes, levels (8, 5, 5, 5): 1000 codes).

The encoder and decoder of `vqvae_cifar10`, with a `FiniteScalarQuantizer`
in place of its learned codebook: the encoder outputs 4 channels, each
bounded and rounded to its number of levels (8, 5, 5 and 5), so a position
takes one of 8 * 5 * 5 * 5 = 1000 codes, log2(1000) = 9.97 bits: 638 bits
per image, against `vqvae_cifar10`'s 576 (K=512). There is no codebook to
collapse and no codebook loss; the straight-through estimator carries the
gradient through the rounding (Mentzer et al., "Finite Scalar Quantization:
VQ-VAE Made Simple", 2023).

Trains on the CIFAR-10 training images minus the last 5000 (validation),
measures on the 10000 test images, and writes `--out/preset/`: what
zoo/fsqvae_cifar10/ ships. The training and its outputs are those of
`zoo/autoencoder_recipe.py` (resumable: rerun the same command after an
interruption).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/fsqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/fsqvae_cifar10 --epochs 20

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`
(labels are not used). A preset trained with it on a JPEG-derived copy of
CIFAR-10 (quality 75) says so on its card.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.autoencoder_recipe import main
from vqkeras.zoo.vqvae_cifar10.recipe import RECIPE as VQVAE_CIFAR10

# vqvae_cifar10's encoder, decoder and data; 4 latent channels, one per level.
RECIPE = dataclasses.replace(
    VQVAE_CIFAR10,
    family="fsq-vae",
    name="fsqvae_cifar10",
    options={"latent_dim": 4, "levels": (8, 5, 5, 5)},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
