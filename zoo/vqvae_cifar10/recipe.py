"""Recipe: an EMA VQ-VAE on CIFAR-10 (an 8x8 grid of codes, K=512 codes of size D=64).

Trains on the CIFAR-10 training images minus the last 5000 (validation),
measures on the 10000 test images, and writes `--out/preset/`: what
zoo/vqvae_cifar10/ ships. The training and its outputs are those of
`zoo/autoencoder_recipe.py` (resumable: rerun the same command after an
interruption; `--time-limit-minutes` stops after the epoch that passes that
much training time, the learning-rate schedule still assuming `--epochs`).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/vqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/vqvae_cifar10 --epochs 20

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`
(labels are not used). The shipped preset was trained on a JPEG-derived copy
of CIFAR-10 (quality 75), not on the canonical pixels; its card says so.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.autoencoder_recipe import AutoencoderRecipe, main

RECIPE = AutoencoderRecipe(
    family="ema-vqvae",
    name="vqvae_cifar10",
    image_shape=(32, 32, 3),
    sample="cifar10",
    dataset="CIFAR-10, JPEG-derived copy (quality 75)",
    test_split="CIFAR-10 JPEG-derived copy, test split",
    options={"latent_dim": 64, "num_embeddings": 512},
    architecture_options={"channels": (64, 128), "num_residual_blocks": 1, "residual_channels": 64},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
