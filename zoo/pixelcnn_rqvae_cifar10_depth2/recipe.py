"""Recipe: a class-conditional Gated PixelCNN prior over the first 2 levels of the CIFAR-10 RQ-VAE's codes.

Encodes the CIFAR-10 images into 8x8 grids of 4 stacked codes (K=512 per
level) with a trained RQ-VAE (the one of `zoo/rqvae_cifar10/recipe.py`), keeps
the 2 coarsest levels of every position, trains `vqkeras.models.PixelCNNPrior`
with `depth=2` (a position's two codes predicted coarse to fine, after every
code of the positions before it) on the training grids with their class labels
(the last 5000 training images held out for validation, as in the RQ-VAE
recipe), then measures the prior on the 10000 test grids and writes to `--out`
the files listed in `zoo/prior_recipe.py`, among them `preset/`: what
zoo/pixelcnn_rqvae_cifar10_depth2/ ships.

It is the rate-control prior of `vqkeras compress --model rqvae_cifar10 --depth 2`:
the codes of the first 2 levels decode to 28.2 dB where the single-level
`vqvae_cifar10` gives 25.6 dB.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/pixelcnn_rqvae_cifar10_depth2/recipe.py \\
        --data path/to/cifar10.npz --vqvae rqvae_cifar10 --out runs/pixelcnn_rqvae_depth2 \\
        --epochs 8

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`;
`--vqvae` the RQ-VAE preset (default: the shipped `rqvae_cifar10`). The shipped
RQ-VAE was trained on a JPEG-derived copy of CIFAR-10 (quality 75), not on the
canonical pixels. Resuming: run the same command again after an interruption.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
(both levels) given the codes before them and the class label; `bits_per_dim`
the NLL of a whole grid in bits divided by the 3072 pixel values of an image.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.pixelcnn_vqvae_cifar10.recipe import RECIPE as PIXELCNN_VQVAE_CIFAR10
from vqkeras.zoo.prior_recipe import main

# pixelcnn_vqvae_cifar10's data and PixelCNN, over the RQ-VAE's 2 coarsest levels.
RECIPE = dataclasses.replace(
    PIXELCNN_VQVAE_CIFAR10,
    name="pixelcnn_rqvae_cifar10_depth2",
    vqvae="rqvae_cifar10",
    options={"depth": 2},
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
