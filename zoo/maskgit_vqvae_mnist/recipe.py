"""Recipe: a class-conditional MaskGIT prior over the 7x7 codes of the MNIST VQ-VAE.

Encodes the MNIST images into 7x7 code grids with a trained VQ-VAE (the one of
`zoo/vqvae_mnist/recipe.py`), trains `vqkeras.models.MaskGITPrior` (a
bidirectional Transformer that predicts masked codes, cosine masking
schedule, the digit as its class token, labels dropped to a null class with
probability 0.1 for classifier-free guidance) on the training grids with their
digit labels (the last 5000 training images held out for validation), then
measures the prior on the 10000 test grids and writes to `--out` the files
listed in `zoo/prior_recipe.py`, among them `preset/`: what
zoo/maskgit_vqvae_mnist/ ships. Its samples are drawn by parallel decoding in
8 steps (`MaskGITPrior.sample`'s default).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/maskgit_vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --vqvae vqvae_mnist --out runs/maskgit_mnist --epochs 10

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`;
`--vqvae` the VQ-VAE preset (default: the shipped `vqvae_mnist`);
`--classifier` the digit classifier preset that judges the class-conditional
samples (default: the shipped `mnist_classifier`). Resuming: run the same
command again after an interruption.

Test metrics: a MaskGIT prior gives no likelihood; `masked_code_cross_entropy_nats`
is the cross-entropy of the masked test codes under the training's random
masks (see `vqkeras.evaluation.evaluate_prior`).
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.prior_recipe import main
from vqkeras.zoo.transformer_vqvae_mnist.recipe import RECIPE as TRANSFORMER_VQVAE_MNIST

# transformer_vqvae_mnist's data, sizes and schedule; a bidirectional MaskGIT instead.
RECIPE = dataclasses.replace(
    TRANSFORMER_VQVAE_MNIST, name="maskgit_vqvae_mnist", family="maskgit-prior"
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
