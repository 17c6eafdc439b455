"""Recipe: a VQGAN on CIFAR-10, fine-tuned from `vqvae_cifar10` (8x8 codes, K=512).

The architecture of `vqvae_cifar10` (same encoder, EMA codebook of 512 codes
of size 64, decoder: 576 bits per image), started from its weights and trained
further with an L1 pixel loss, a perceptual loss in `cifar10_classifier`'s
convolutions and the hinge loss of a `PatchDiscriminator`, whose adaptive
weight (taming-transformers) balances it against the reconstruction terms at
the decoder's last kernel. Adam with betas (0.5, 0.9) for both optimizers, as
taming-transformers, and a cosine decay to a tenth.

The training data and the outputs are those of `zoo/autoencoder_recipe.py`:
CIFAR-10's training images minus the last 5000, measured on the 10000 test
images; `--out/preset/` holds the inference `VQVAE` only (no discriminator),
what zoo/vqgan_cifar10/ ships. The test metrics add the Fréchet distance of
the reconstructions to the test images in `cifar10_classifier`'s "features"
layer, for this model and for `vqvae_cifar10` (the reference). Note that the
perceptual loss is measured in the same network's convolutions, so that
distance is not independent of the training objective.

Usage (any Keras backend; resumable: rerun the same command):

    KERAS_BACKEND=tensorflow python zoo/vqgan_cifar10/recipe.py \\
        --data path/to/cifar10.npz --out runs/vqgan_cifar10 --epochs 4

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`
(labels are not used). The shipped preset was trained on a JPEG-derived copy
of CIFAR-10 (quality 75); its card says so.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import dataclasses

from vqkeras.zoo.autoencoder_recipe import main
from vqkeras.zoo.vqvae_cifar10.recipe import RECIPE as VQVAE_CIFAR10

# vqvae_cifar10's architecture and data: its weights must fit.
RECIPE = dataclasses.replace(
    VQVAE_CIFAR10,
    family="vqgan",
    name="vqgan_cifar10",
    options={
        **VQVAE_CIFAR10.options,
        "perceptual_features": "cifar10_classifier",
        "discriminator_start": 0,
        "discriminator_learning_rate": 2e-4,
    },
    learning_rate=2e-4,
    betas=(0.5, 0.9),
    init_from="vqvae_cifar10",
    frechet_features="cifar10_classifier",
)

if __name__ == "__main__":
    main(RECIPE, description=__doc__.split("\n\n")[0])
