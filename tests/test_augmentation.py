import keras
import numpy as np
import pytest
from conftest import blob_images

from vqkeras.augmentation import AUGMENTATIONS, augmentation_layers, augmented_batches
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import fit_resumable


def epoch(dataset):
    return np.concatenate([np.asarray(batch) for batch in dataset])


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


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r"\(N, height, width, channels\). Received: \(8, 8\)"):
        augmented_batches(np.zeros((8, 8), "uint8"), 4, [])


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

    with pytest.raises(ValueError, match="also its targets"):
        fit_resumable(
            model, images, tmp_path / "y", epochs=1, batch_size=8, y=images, augmentation=layers
        )


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
