"""Recipe: a VQ-VAE-2 on CIFAR-10 (a 4x4 top grid over an 8x8 bottom grid, K=512 codes of size D=64 per level).

The bottom encoder and the decoder have the sizes of `vqvae_cifar10`'s; a
top encoder halves the bottom features once more, and the bottom codes are
chosen given the decoded top (see `vqkeras.models.VQVAE2`). Both levels have
EMA codebooks. Trains on the CIFAR-10 training images minus the last 5000
(validation), measures on the 10000 test images, and writes `--out/preset/`:
what zoo/vqvae2_cifar10/ ships. The training and its outputs are those of
`zoo/autoencoder_recipe.py` (resumable: rerun the same command after an
interruption; `--time-limit-minutes` stops after the epoch that passes that
much training time, and `--schedule-epochs` reproduces such a run).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/vqvae2_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/vqvae2_cifar10 --epochs 12

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`
(labels are not used). The shipped preset was trained on a JPEG-derived copy
of CIFAR-10 (quality 75), not on the canonical pixels; its card says so.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.autoencoder_recipe import main
from vqkeras.zoo.vqvae_cifar10.recipe import RECIPE as VQVAE_CIFAR10

# vqvae_cifar10's encoder, decoder, codebooks and data; a top grid of half the size.
RECIPE = dataclasses.replace(
    VQVAE_CIFAR10,
    family="vqvae2",
    name="vqvae2_cifar10",
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
