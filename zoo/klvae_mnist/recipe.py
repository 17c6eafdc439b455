"""Recipe: a KL-VAE (the AutoencoderKL of latent diffusion) on MNIST: a 7x7x4 Gaussian latent.

Downsampling 4, a KL weight of 1e-6, and the latents' `scaling_factor`
computed on the training images. Trains on the MNIST training images minus the
last 5000 (validation), measures on the 10000 test images, and writes
`--out/preset/`: what zoo/klvae_mnist/ ships. The training and its outputs are
those of `zoo/autoencoder_recipe.py` (resumable: rerun the same command after
an interruption).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/klvae_mnist/recipe.py \\
        --data path/to/mnist.npz --out runs/klvae_mnist --epochs 10
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.autoencoder_recipe import AutoencoderRecipe, main

RECIPE = AutoencoderRecipe(
    family="klvae",
    name="klvae_mnist",
    image_shape=(28, 28, 1),
    sample="mnist",
    dataset="MNIST (keras.datasets layout)",
    test_split="MNIST test split",
    options={"latent_dim": 4, "kl_weight": 1e-6},
    architecture_options={"channels": (32, 64), "num_residual_blocks": 1},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
