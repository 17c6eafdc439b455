"""Small image samples shipped with vqkeras, so demos and tests run offline.

- `mnist`: the first 256 images of the MNIST test split, uint8 (256, 28, 28, 1),
  with their labels.
- `cifar10`: the first 256 images of the CIFAR-10 test split, uint8
  (256, 32, 32, 3), with their labels, taken from a JPEG-derived copy of
  CIFAR-10 (quality 75; about 6/255 mean absolute error per channel against
  the original pixels), not from the canonical files.
"""

import os

import numpy as np

NAMES = ("mnist", "cifar10")
_FILES = {"mnist": "mnist_test_256.npz", "cifar10": "cifar10_test_256.npz"}


def load(name):
    """Returns `(images, labels)` of a shipped sample: uint8 NHWC images and int labels."""
    if name not in _FILES:
        raise ValueError(f"Unknown sample {name!r}. Expected one of: {', '.join(NAMES)}.")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _FILES[name])
    with np.load(path, allow_pickle=False) as data:
        return data["images"], data["labels"].astype("int64")
