"""Recipe: a class-conditional Transformer prior over the 8x8 codes of the CIFAR-10 VQ-VAE.

Encodes the CIFAR-10 images into 8x8 grids of K=512 codes with a trained
VQ-VAE (the one of `zoo/vqvae_cifar10/recipe.py`), and the training images
mirrored left to right as well (twice the training grids: a mirrored ship is
still a ship), trains `vqkeras.models.TransformerPrior` (a decoder-only
Transformer over the 64 codes in raster order, the class as its start token,
labels dropped to a null class with probability 0.1 for classifier-free
guidance) on the training grids with their labels (the last 5000 training
images held out for validation, as in the VQ-VAE recipe), then measures the
prior on the 10000 test grids and writes to `--out` the files listed in
`zoo/prior_recipe.py`, among them `preset/`: what
zoo/transformer_vqvae_cifar10/ ships.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/transformer_vqvae_cifar10/recipe.py \\
        --data path/to/cifar10.npz --vqvae vqvae_cifar10 --out runs/transformer_cifar10 \\
        --epochs 4

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`;
`--vqvae` the VQ-VAE preset (default: the shipped `vqvae_cifar10`);
`--classifier` the classifier preset that judges the class-conditional
samples (default: the shipped `cifar10_classifier`). The shipped prior was
trained on the codes of a JPEG-derived copy of CIFAR-10 (quality 75), not of
the canonical pixels; its card says so. Resuming: run the same command again
after an interruption.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
given the codes before them and the class label; `bits_per_dim` the NLL of a
whole grid in bits divided by the 3072 pixel values of an image.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.pixelcnn_vqvae_cifar10.recipe import RECIPE as PIXELCNN_VQVAE_CIFAR10
from vqkeras.zoo.prior_recipe import main

# pixelcnn_vqvae_cifar10's codes and data, mirrored images added; a Transformer
# judged by cifar10_classifier.
RECIPE = dataclasses.replace(
    PIXELCNN_VQVAE_CIFAR10,
    name="transformer_vqvae_cifar10",
    classifier="cifar10_classifier",
    family="transformer-prior",
    options={
        "embed_dim": 256,
        "num_heads": 8,
        "num_layers": 6,
        "mlp_ratio": 4,
        "dropout": 0.1,
        "label_dropout": 0.1,
    },
    learning_rate=5e-4,
    mirrored_training_images=True,
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
