"""Recipe: a class-conditional Transformer prior over the 7x7 codes of the MNIST VQ-VAE.

Encodes the MNIST images into 7x7 code grids with a trained VQ-VAE (the one of
`zoo/vqvae_mnist/recipe.py`), trains `vqkeras.models.TransformerPrior` (a
decoder-only Transformer over the 49 codes in raster order, the digit as its
start token, labels dropped to a null class with probability 0.1 for
classifier-free guidance) on the training grids with their digit labels (the
last 5000 training images held out for validation), then measures the prior
on the 10000 test grids and writes everything to `--out`:

    codes.npz            the exported int32 code grids and labels of every split
    samples.npz          sampled code grids (10 per digit) and their decoded images
    samples.png          those images, one row per digit
    metrics.json         test-split NLL (nats/code) and bits/dim, the agreement
                         of a digit classifier with 1000 class-conditional
                         samples, timings
    preset/              the trained prior as a preset: what
                         zoo/transformer_vqvae_mnist/ ships

plus the files of `vqkeras.training.fit_resumable` (training_log.csv,
timing.json, checkpoints/, backup/).

Usage (any Keras backend):

    KERAS_BACKEND=torch python zoo/transformer_vqvae_mnist/recipe.py \\
        --data path/to/mnist.npz --vqvae vqvae_mnist --out runs/transformer_mnist --epochs 24

`--data` is an `.npz` file in the layout of `keras.datasets.mnist.load_data()`;
`--vqvae` the VQ-VAE preset (default: the shipped `vqvae_mnist`);
`--classifier` the digit classifier preset (default: the shipped
`mnist_classifier`). `--schedule-epochs` and `--time-limit-minutes` as in
every recipe. Resuming: run the same command again.

The training and its outputs are those of `vqkeras/zoo/prior_recipe.py`.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from vqkeras.zoo.prior_recipe import PriorRecipe, main

RECIPE = PriorRecipe(
    name="transformer_vqvae_mnist",
    vqvae="vqvae_mnist",
    image_shape=(28, 28, 1),
    num_classes=10,
    sample="mnist",
    dataset="MNIST",
    classifier="mnist_classifier",
    family="transformer-prior",
    options={
        "embed_dim": 128,
        "num_heads": 4,
        "num_layers": 4,
        "mlp_ratio": 4,
        "dropout": 0.1,
        "label_dropout": 0.1,
    },
    learning_rate=5e-4,
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
