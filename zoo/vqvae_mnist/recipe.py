"""Recipe: an EMA VQ-VAE on MNIST (a 7x7 grid of codes, K=128 codes of size D=16).

Trains on the MNIST training images minus the last 5000 (validation), measures
on the 10000 test images, and writes `--out/preset/`: what zoo/vqvae_mnist/
ships. The training and its outputs are those of `zoo/autoencoder_recipe.py`
(resumable: rerun the same command after an interruption).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --out runs/vqvae_mnist --epochs 18

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`
(labels are not used). Loading the result:
`vqkeras.from_preset("runs/vqvae_mnist/preset")`.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.autoencoder_recipe import AutoencoderRecipe, main

RECIPE = AutoencoderRecipe(
    family="ema-vqvae",
    name="vqvae_mnist",
    image_shape=(28, 28, 1),
    sample="mnist",
    dataset="MNIST (keras.datasets layout)",
    test_split="MNIST test split",
    options={"latent_dim": 16, "num_embeddings": 128},
    architecture_options={"channels": (48, 96), "num_residual_blocks": 2},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
