"""The cifar10_classifier recipe on a few generated images: what it writes,
and that its preset is the feature network of the Fréchet distance and the
perceptual loss. (The recipe is a script in zoo/, loaded here by path.)"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

import vqkeras
from vqkeras.evaluation import feature_layer_name, frechet_distance_of_images
from vqkeras.layers import PerceptualLoss

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "cifar10_classifier" / "recipe.py"


@pytest.fixture
def recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("cifar10_classifier_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "VALIDATION_SIZE", 8)
    return module


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar.npz"
    images = rng.integers(0, 256, (44, 32, 32, 3)).astype("uint8")
    labels = rng.integers(0, 10, (44, 1))
    np.savez(path, x_train=images[:32], y_train=labels[:32], x_test=images[32:], y_test=labels[32:])
    return str(path)


@pytest.mark.slow
def test_the_recipe_writes_a_resumable_run_and_a_feature_network_preset(recipe, data, tmp_path):
    out = tmp_path / "run"
    arguments = ["--data", data, "--out", str(out), "--batch-size", "8", "--limit-train", "16"]
    recipe.main([*arguments, "--epochs", "1"])
    recipe.main([*arguments, "--epochs", "2"])  # resumes: one more epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["train_images"] == 16
    assert metrics["test"]["images"] == 12 and 0 <= metrics["test"]["accuracy"] <= 1
    assert len((out / "training_log.csv").read_text().strip().splitlines()) == 3  # header + 2

    classifier = vqkeras.from_preset(out / "preset")
    card = json.loads((out / "preset" / "metadata.json").read_text())
    assert card["feature_layer"] == feature_layer_name(classifier) == "features"
    assert card["recipe"] == "zoo/cifar10_classifier/recipe.py"
    assert card["metrics"] == metrics["test"]
    # The figure the suite holds a shipped preset to: its accuracy on the sample.
    check = card["sample_check"]
    sample_images, sample_labels = vqkeras.samples.load("cifar10")
    sample_scores = classifier.predict(sample_images / 255.0, verbose=0)
    assert check["sample"] == "cifar10"
    np.testing.assert_allclose(
        check["accuracy"], np.mean(np.argmax(sample_scores, -1) == sample_labels), rtol=1e-6
    )
    assert check["accuracy_floor"] == pytest.approx(check["accuracy"] - 0.01)
    test_images = np.load(data)["x_test"]
    scores = classifier.predict(test_images / 255.0, verbose=0)
    accuracy = np.mean(np.argmax(scores, -1) == np.load(data)["y_test"][:, 0])
    np.testing.assert_allclose(metrics["test"]["accuracy"], accuracy, rtol=1e-6)

    # What the preset is for: features of 256 values, and six convolutions to compare.
    distance = frechet_distance_of_images(test_images[:6], test_images[6:], classifier)
    assert (
        distance["features"] == "cifar10_classifier/features" and distance["frechet_distance"] > 0
    )
    perceptual = PerceptualLoss.from_classifier(str(out / "preset"))
    assert perceptual.layer_names == tuple(f"block{b}_conv{c}" for b in (1, 2, 3) for c in (1, 2))
