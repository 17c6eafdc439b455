"""Reading images for the apps: shipped samples and .npz files."""

import os

import numpy as np

from vqkeras import samples

SAMPLE_PREFIX = "sample:"


def load_images(spec, split="test"):
    """Images and labels named by `spec`.

    Args:
        spec: `sample:mnist` / `sample:cifar10` (shipped with vqkeras), or an
            .npz file in the keras.datasets layout (`x_train`, `y_train`,
            `x_test`, `y_test`) or holding `images` (and optionally `labels`).
        split: "train" or "test", for keras.datasets-layout files.

    Returns:
        `(images, labels)`: uint8 NHWC images (grayscale gets a channel axis)
        and int labels or None.
    """
    if spec.startswith(SAMPLE_PREFIX):
        return samples.load(spec[len(SAMPLE_PREFIX) :])
    if not os.path.exists(spec):
        raise FileNotFoundError(f"Input {spec!r} does not exist.")
    if not spec.endswith(".npz"):
        raise ValueError(
            f"Unsupported input {spec!r}: expected an .npz file or "
            f"{SAMPLE_PREFIX}mnist / {SAMPLE_PREFIX}cifar10."
        )
    try:
        data = np.load(spec, allow_pickle=False)
    except Exception as e:  # zip or format errors from a damaged file
        raise ValueError(f"Cannot read {spec!r} as .npz: {e}") from None
    with data:
        keys = set(data.files)
        if f"x_{split}" in keys:
            images, labels = data[f"x_{split}"], data.get(f"y_{split}")
        elif "images" in keys:
            images, labels = data["images"], data.get("labels")
        else:
            raise ValueError(
                f"{spec!r} holds {sorted(keys)}: expected x_{split} (keras.datasets "
                "layout) or images."
            )
    if images.ndim == 3:
        images = images[..., None]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype("int64")
    return images, labels
