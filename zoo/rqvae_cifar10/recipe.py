"""Recipe: an RQ-VAE on CIFAR-10 (an 8x8 grid of 4 residual codes, K=512 codes of size D=64 per level).

The encoder, decoder and codebook sizes are those of `vqvae_cifar10`, so the
two presets differ only in the quantizer: each latent vector here is a stack
of 4 codes from 4 EMA codebooks, coarse to fine. Trains on the CIFAR-10
training images minus the last 5000 (validation), measures on the 10000 test
images, and writes `--out/preset/`: what zoo/rqvae_cifar10/ ships. The
training and its outputs are those of `zoo/autoencoder_recipe.py`
(resumable: rerun the same command after an interruption;
`--time-limit-minutes` stops after the epoch that passes that much training
time, and `--schedule-epochs` reproduces such a run).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/rqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/rqvae_cifar10 --epochs 12

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

# vqvae_cifar10's encoder, decoder, codebooks and data; 4 levels of codes.
RECIPE = dataclasses.replace(
    VQVAE_CIFAR10,
    family="rqvae",
    name="rqvae_cifar10",
    options={"latent_dim": 64, "num_embeddings": 512, "depth": 4},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
