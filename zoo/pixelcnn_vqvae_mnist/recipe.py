"""Recipe: a class-conditional Gated PixelCNN prior over the 7x7 codes of the MNIST VQ-VAE.

Encodes the MNIST images into 7x7 code grids with a trained VQ-VAE (the one of
`zoo/vqvae_mnist/recipe.py`), trains `vqkeras.models.PixelCNNPrior` on the
training grids with their digit labels (the last 5000 training images held out
for validation, as in the VQ-VAE recipe), then measures the prior on the 10000
test grids and writes everything to `--out`:

    codes.npz            the exported int32 code grids and labels of every split
    samples.npz          sampled code grids (10 per digit) and their decoded images
    samples.png          those images, one row per digit
    metrics.json         test-split NLL (nats/code) and bits/dim, the agreement
                         of a digit classifier with 1000 class-conditional
                         samples, timings
    preset/              the trained prior as a preset: what
                         zoo/pixelcnn_vqvae_mnist/ ships

plus the files of `vqkeras.training.fit_resumable` (training_log.csv,
timing.json, checkpoints/, backup/).

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/pixelcnn_vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --vqvae vqvae_mnist --out runs/pixelcnn_mnist \\
        --epochs 6 --schedule-epochs 8

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`;
`--vqvae` the VQ-VAE preset: the shipped `vqvae_mnist` (default) or a preset
folder, e.g. the `preset/` written by `zoo/vqvae_mnist/recipe.py`;
`--classifier` the digit classifier preset (default: the shipped
`mnist_classifier`, from `zoo/mnist_classifier/recipe.py`).
`--schedule-epochs` sets the length of the cosine learning-rate schedule when
it differs from `--epochs` (the shipped prior: 6 epochs of an 8-epoch
schedule). `--time-limit-minutes` stops training after the epoch that passes
that much training time.

Resuming: run the same command again after an interruption; training restarts
from the last completed epoch. To start afresh, use a new `--out` directory.

Test metrics: `nll_nats_per_code` is the mean cross-entropy of the test codes
given the codes before them and the digit label; `bits_per_dim` the NLL of a
whole grid in bits divided by the 784 pixel values of an image. The training
and its outputs are those of `zoo/prior_recipe.py`.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.prior_recipe import PriorRecipe, main

RECIPE = PriorRecipe(
    name="pixelcnn_vqvae_mnist",
    family="pixelcnn-prior",
    vqvae="vqvae_mnist",
    image_shape=(28, 28, 1),
    num_classes=10,
    sample="mnist",
    dataset="MNIST",
    classifier="mnist_classifier",
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
