import csv
import json

import numpy as np
import pytest
from conftest import blob_images, small_vqvae

from vqkeras.training import completed_epochs, fit_resumable, is_resuming, load_npz_splits


def compiled_vqvae():
    model = small_vqvae()
    model.build((None, 16, 16, 1))
    model.compile(optimizer="adam")
    return model


def logged_epochs(out):
    with open(out / "training_log.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_an_interrupted_run_resumes_and_a_finished_run_trains_no_further(tmp_path):
    images = blob_images(16)
    kwargs = {"batch_size": 8, "validation_data": (images[:8],), "verbose": 0}
    fit_resumable(compiled_vqvae(), images, tmp_path, epochs=1, **kwargs)
    assert is_resuming(tmp_path) and logged_epochs(tmp_path) == [0]
    assert (tmp_path / "checkpoints" / "epoch_001.weights.h5").exists()

    # The same command with more epochs: continues from epoch 2.
    resumed = compiled_vqvae()
    history, timer = fit_resumable(resumed, images, tmp_path, epochs=2, **kwargs)
    assert history.epoch == [1]
    assert logged_epochs(tmp_path) == [0, 1] and completed_epochs(tmp_path) == 2
    assert sorted(json.loads((tmp_path / "timing.json").read_text())["epochs"]) == ["1", "2"]
    assert timer.summary()["epochs"] == 2

    # Rerun once finished: restores the final weights and trains no further.
    rerun = compiled_vqvae()
    history, _ = fit_resumable(rerun, images, tmp_path, epochs=2, **kwargs)
    assert history.epoch == []
    for a, b in zip(resumed.weights, rerun.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_resumable_needs_a_built_compiled_model(tmp_path):
    with pytest.raises(ValueError, match="built and compiled"):
        fit_resumable(small_vqvae(), blob_images(4), tmp_path, epochs=1, batch_size=4)


def test_load_npz_splits(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(10 * 4 * 4, dtype="uint8").reshape(10, 4, 4)
    np.savez(path, x_train=x, y_train=np.arange(10).reshape(10, 1), x_test=x[:3], y_test=[1, 2, 3])
    data = load_npz_splits(path, (4, 4, 1), validation_size=4, limit_train=5)
    assert data["x_train"].shape == (5, 4, 4, 1) and data["x_val"].shape == (4, 4, 4, 1)
    np.testing.assert_array_equal(data["y_val"], [6, 7, 8, 9])
    assert data["y_test"].dtype == np.int32
    with pytest.raises(ValueError, match=r"expected x_train as uint8 of shape \(N, 8, 8, 1\)"):
        load_npz_splits(path, (8, 8, 1), validation_size=4)
    with pytest.raises(ValueError, match="more than 10 images"):
        load_npz_splits(path, (4, 4, 1), validation_size=10)
    np.savez(path, images=x)
    with pytest.raises(ValueError, match=r"Missing: \['x_test', 'x_train'"):
        load_npz_splits(path, (4, 4, 1), validation_size=4)
