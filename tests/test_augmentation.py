import keras
import numpy as np
import pytest
from conftest import blob_images

from vqkeras.augmentation import AUGMENTATIONS, augmentation_layers, augmented_batches
from vqkeras.dependencies import tensorflow_available
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import fit_resumable

# The pipeline is tf.data's: without TensorFlow (a JAX or PyTorch install) these skip.
needs_tensorflow = pytest.mark.skipif(
    not tensorflow_available(), reason="augmentation runs in a tf.data pipeline"
)


def epoch(dataset):
    return np.concatenate([np.asarray(batch) for batch in dataset])


@needs_tensorflow
def test_batches_without_layers_are_a_shuffled_epoch_of_unit_floats():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype="uint8")
    dataset = augmented_batches(images, 4, [], seed=0)
    first, second = epoch(dataset), epoch(dataset)
    assert first.dtype == np.float32 and first.shape == images.shape
    assert [len(batch) for batch in dataset] == [4, 4, 2]
    expected = np.sort((images / 255.0).reshape(10, -1), axis=0)
    np.testing.assert_allclose(np.sort(first.reshape(10, -1), axis=0), expected, atol=1e-6)
    # Reshuffled every epoch.
    assert not np.array_equal(first, second)


@needs_tensorflow
def test_labels_stay_with_their_images():
    images = np.arange(10, dtype="uint8")[:, None, None, None] * np.ones((1, 4, 4, 1), "uint8")
    labels = np.arange(10, dtype="int32") * 3
    batches = list(augmented_batches(images, 4, [], seed=0, labels=labels))
    x = np.concatenate([np.asarray(b[0]) for b in batches])
    y = np.concatenate([np.asarray(b[1]) for b in batches])
    np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255).astype("int32") * 3, y)
    assert sorted(y) == list(labels) and not np.array_equal(y, labels)  # shuffled
    with pytest.raises(ValueError, match="one label per image. Received 9 labels for 10 images"):
        augmented_batches(images, 4, [], labels=labels[:9])


@needs_tensorflow
def test_flips_mirror_whole_images_and_shifts_keep_the_pixel_range():
    images = np.random.default_rng(1).random((64, 8, 8, 1)).astype("float32")
    flipped = epoch(augmented_batches(images, 16, augmentation_layers(["flip"], seed=0)))
    keys = {images[i].tobytes(): i for i in range(len(images))}
    mirrored = {images[i, :, ::-1].tobytes(): i for i in range(len(images))}
    # Every output is one input, as it was or mirrored left-right; both happen.
    as_was = [image.tobytes() in keys for image in flipped]
    assert all(a or image.tobytes() in mirrored for a, image in zip(as_was, flipped))
    assert 0 < sum(as_was) < len(images)

    shifted = epoch(augmented_batches(images, 16, augmentation_layers(["shift"], seed=0)))
    assert shifted.shape == images.shape and 0 <= shifted.min() and shifted.max() <= 1
    assert not np.allclose(np.sort(shifted.reshape(64, -1), 0), np.sort(images.reshape(64, -1), 0))


@pytest.mark.parametrize("names", [[], ["rotate"], ["flip", "zoom"]])
def test_unknown_augmentations_are_refused(names):
    with pytest.raises(ValueError, match="subset of"):
        augmentation_layers(names)
    assert set(AUGMENTATIONS) == {"flip", "shift"}


@needs_tensorflow
def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r"\(N, height, width, channels\). Received: \(8, 8\)"):
        augmented_batches(np.zeros((8, 8), "uint8"), 4, [])


@needs_tensorflow
def test_fit_resumable_trains_on_augmented_images(tmp_path):
    images = blob_images(24)
    model = build_autoencoder("ae", images.shape[1:], channels=(8,), latent_dim=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    layers = augmentation_layers(["flip", "shift"], seed=0)
    history, timer = fit_resumable(
        model, images, tmp_path, epochs=3, batch_size=8, augmentation=layers, seed=0, verbose=0
    )
    losses = history.history["loss"]
    assert len(losses) == 3 and np.isfinite(losses).all() and losses[-1] < losses[0]
    assert timer.summary()["epochs"] == 3

    # A classifier's labels travel with their images: blank images (label 0)
    # from images with a blob (1), which flips and shifts keep apart.
    images[::2] = 0
    labels = np.tile([0, 1], 12).astype("int32")
    classifier = keras.Sequential(
        [
            keras.Input(images.shape[1:]),
            keras.layers.GlobalMaxPooling2D(),
            # From zeros: learnt in a few steps whatever the seed.
            keras.layers.Dense(2, kernel_initializer="zeros"),
        ]
    )
    classifier.compile(
        keras.optimizers.Adam(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history, _ = fit_resumable(
        classifier,
        images,
        tmp_path / "labels",
        y=labels,
        epochs=5,
        batch_size=8,
        augmentation=layers,
        seed=0,
        verbose=0,
    )
    assert history.history["accuracy"][-1] == 1.0


def test_keras_cv_layers_work_in_the_pipeline():
    # docs/training.md's recipe: keras-cv's layers beside Keras's own, on every backend.
    keras_cv = pytest.importorskip("keras_cv")
    images = np.full((8, 16, 16, 3), 200, "uint8")
    cutout = keras_cv.layers.RandomCutout(0.25, 0.25, fill_mode="constant", seed=0)
    batches = epoch(augmented_batches(images, 4, [cutout, *augmentation_layers(["flip"])]))
    assert batches.shape == (8, 16, 16, 3)
    # Every image keeps its value outside the cut-out patch, which is zeroed.
    for image in batches:
        values = np.unique(image)
        assert len(values) == 2 and values[0] == 0
        np.testing.assert_allclose(values[1], 200 / 255, rtol=1e-6)
