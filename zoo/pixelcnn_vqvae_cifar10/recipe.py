"""Recipe: a class-conditional Gated PixelCNN prior over the 8x8 codes of the CIFAR-10 VQ-VAE.

Encodes the CIFAR-10 images into 8x8 grids of K=512 codes with a trained
VQ-VAE (the one of `zoo/vqvae_cifar10/recipe.py`), trains
`vqkeras.models.PixelCNNPrior` on the training grids with their class labels
(the last 5000 training images held out for validation, as in the VQ-VAE
recipe), then measures the prior on the 10000 test grids and writes to
`--out` the files listed in `zoo/prior_recipe.py`, among them `preset/`: what
zoo/pixelcnn_vqvae_cifar10/ ships.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/pixelcnn_vqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --vqvae vqvae_cifar10 --out runs/pixelcnn_cifar10 \\
        --epochs 8

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`;
`--vqvae` the VQ-VAE preset: the shipped `vqvae_cifar10` (default) or a
preset folder. The shipped prior was trained on the codes of a JPEG-derived
copy of CIFAR-10 (quality 75), not of the canonical pixels; its card says so.
Resuming: run the same command again after an interruption.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
given the codes before them and the class label; `bits_per_dim` the NLL of a
whole grid in bits divided by the 3072 pixel values of an image.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.prior_recipe import PriorRecipe, main

RECIPE = PriorRecipe(
    name="pixelcnn_vqvae_cifar10",
    family="pixelcnn-prior",
    vqvae="vqvae_cifar10",
    image_shape=(32, 32, 3),
    num_classes=10,
    sample="cifar10",
    dataset="CIFAR-10 JPEG-derived copy",
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
