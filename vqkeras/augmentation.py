"""Random augmentation of training images, in the tf.data input pipeline.

Keras's own preprocessing layers (`RandomFlip`, `RandomTranslation`) run
inside tf.data on every backend, so the model's training step is unchanged
and the augmentation costs the accelerator nothing. (keras-cv is not used: its
layers fail inside a model under JAX `fit`, and upstream development moved to
keras-hub; its augmentations can still be mapped over a `tf.data` pipeline,
see docs/training.md.) The pipeline needs TensorFlow, whatever the backend:
vqkeras's `tensorflow` extra.

Example:

    layers = augmentation_layers(["shift"], seed=0)   # digits: no flips
    batches = augmented_batches(x_train, 128, layers, seed=0)
    model.fit(batches, epochs=10)
"""

import keras
import numpy as np

from vqkeras.dependencies import require_tensorflow

# What each name adds; the order of the pipeline is that of this table.
AUGMENTATIONS = {
    "flip": "random left-right flips (not for digits or text)",
    "shift": "random translations by up to an eighth of the height and width, edges reflected",
}
MAX_SHIFT = 0.125


def augmentation_layers(names, seed=None):
    """The random preprocessing layers of `names`, in pipeline order.

    A list rather than a `keras.Sequential`: Keras's preprocessing layers
    switch to TensorFlow inside tf.data, a `Sequential` around them does not,
    and fails there under JAX and PyTorch.

    Args:
        names: a subset of `AUGMENTATIONS` ("flip", "shift").
        seed: seeds the layers' random draws.

    Returns:
        The layers, for `augmented_batches`.
    """
    names = list(names)
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise ValueError(
            f"Augmentations are a non-empty subset of {sorted(AUGMENTATIONS)}. Received: {names}."
        )
    layers = []
    if "flip" in names:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if "shift" in names:
        layers.append(
            keras.layers.RandomTranslation(MAX_SHIFT, MAX_SHIFT, fill_mode="reflect", seed=seed)
        )
    return layers


def augmented_batches(images, batch_size, layers, seed=None, labels=None):
    """A `tf.data.Dataset` of shuffled, augmented batches of `images`, for `fit`.

    Args:
        images: uint8 images in [0, 255] or float images in [0, 1], NumPy,
            shape `(N, H, W, C)`.
        batch_size: images per batch (the last batch may be smaller).
        layers: random preprocessing layers applied in turn, such as
            `augmentation_layers(...)`; they see float32 images in [0, 1].
        seed: seeds the shuffling (reshuffled every epoch).
        labels: targets `(N, ...)` that stay with their images (a
            classifier's), or None for images alone (an autoencoder's).

    Returns:
        Batches of float32 images in [0, 1] (the pixel convention of
        `fit`), or `(images, labels)` pairs of batches.
    """
    tf = require_tensorflow("Augmentation (a tf.data pipeline)")

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"Expected images of shape (N, height, width, channels). Received: {images.shape}."
        )
    scale = 255.0 if images.dtype == np.uint8 else 1.0

    def augment(batch):
        batch = tf.cast(batch, "float32") / scale
        for layer in layers:
            batch = layer(batch, training=True)
        # Interpolation can leave a hair outside [0, 1], where fit's checks draw the line.
        return tf.clip_by_value(batch, 0.0, 1.0)

    if labels is None:
        dataset, transform = tf.data.Dataset.from_tensor_slices(images), augment
    else:
        labels = np.asarray(labels)
        if len(labels) != len(images):
            raise ValueError(
                f"Expected one label per image. Received {len(labels)} labels for "
                f"{len(images)} images."
            )
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        transform = lambda batch, targets: (augment(batch), targets)  # noqa: E731
    return (
        dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
