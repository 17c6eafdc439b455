"""The classifier recipes on a few generated images: what they write through
`vqkeras.training.train_and_evaluate`, their optimizers, and that the
cifar10_classifier preset is the feature network of the Fréchet distance and
the perceptual loss. (The recipes are scripts in zoo/, loaded here by path.)"""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest

import vqkeras
from vqkeras.evaluation import feature_layer_name, frechet_distance_of_images
from vqkeras.layers import PerceptualLoss

ZOO = pathlib.Path(__file__).resolve().parents[1] / "zoo"


def load_recipe(name, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", ZOO / name / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "VALIDATION_SIZE", 8)
    return module


def generated_npz(path, image_shape):
    """32 training and 12 test images of random pixels and classes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (44, *image_shape)).astype("uint8")
    labels = rng.integers(0, 10, (44, 1))
    np.savez(path, x_train=images[:32], y_train=labels[:32], x_test=images[32:], y_test=labels[32:])
    return str(path)


@pytest.fixture
def recipe(monkeypatch):
    return load_recipe("cifar10_classifier", monkeypatch)


@pytest.fixture
def data(tmp_path):
    return generated_npz(tmp_path / "cifar.npz", (32, 32, 3))


def assert_sample_check(card, classifier, sample_name):
    """The preset's sample_check is its classifier's accuracy on the shipped sample."""
    check = card["sample_check"]
    sample_images, sample_labels = vqkeras.samples.load(sample_name)
    sample_scores = classifier.predict(sample_images / 255.0, verbose=0)
    assert check["sample"] == sample_name
    np.testing.assert_allclose(
        check["accuracy"], np.mean(np.argmax(sample_scores, -1) == sample_labels), rtol=1e-6
    )
    assert check["accuracy_floor"] == pytest.approx(check["accuracy"] - 0.01)


@pytest.mark.slow
def test_the_mnist_recipe_trains_with_plain_adam_and_writes_the_shipped_card(monkeypatch, tmp_path):
    recipe = load_recipe("mnist_classifier", monkeypatch)
    data = generated_npz(tmp_path / "mnist.npz", (28, 28))  # grayscale without a channel axis
    out = tmp_path / "run"
    run = recipe.main(["--data", data, "--out", str(out), "--epochs", "2", "--batch-size", "8"])
    # The shipped preset's optimizer: Adam at a constant 1e-3 (a cosine decay to 100%).
    optimizer = run.model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam) and int(optimizer.iterations) == 2 * 3
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["train_images"] == 24
    classifier = vqkeras.from_preset(out / "preset")
    card = json.loads((out / "preset" / "metadata.json").read_text())
    shipped = json.loads((ZOO / "mnist_classifier" / "metadata.json").read_text())
    assert card.keys() == shipped.keys() and card["training"].keys() == shipped["training"].keys()
    assert card["metrics"] == metrics["test"] and metrics["test"]["images"] == 12
    assert_sample_check(card, classifier, "mnist")
    test = np.load(data)
    scores = classifier.predict(test["x_test"][..., None] / 255.0, verbose=0)
    accuracy = np.mean(np.argmax(scores, -1) == test["y_test"][:, 0])
    np.testing.assert_allclose(metrics["test"]["accuracy"], accuracy, rtol=1e-6)


@pytest.mark.slow
def test_the_recipe_writes_a_resumable_run_and_a_feature_network_preset(recipe, data, tmp_path):
    out = tmp_path / "run"
    arguments = ["--data", data, "--out", str(out), "--batch-size", "8", "--limit-train", "16"]
    recipe.main([*arguments, "--epochs", "1"])
    run = recipe.main([*arguments, "--epochs", "2"])  # resumes: one more epoch
    # Adam from 1e-3 down the cosine to 1e-4 over the 2 x 2 steps of both sessions.
    assert int(run.model.optimizer.iterations) == 4
    assert float(run.model.optimizer.learning_rate) == pytest.approx(1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["train_images"] == 16
    assert metrics["test"]["images"] == 12 and 0 <= metrics["test"]["accuracy"] <= 1
    assert len((out / "training_log.csv").read_text().strip().splitlines()) == 3  # header + 2

    classifier = vqkeras.from_preset(out / "preset")
    card = json.loads((out / "preset" / "metadata.json").read_text())
    shipped = json.loads((ZOO / "cifar10_classifier" / "metadata.json").read_text())
    assert card.keys() == shipped.keys() and card["training"].keys() == shipped["training"].keys()
    assert card["feature_layer"] == feature_layer_name(classifier) == "features"
    assert card["recipe"] == "zoo/cifar10_classifier/recipe.py"
    assert card["metrics"] == metrics["test"]
    # The figure the suite holds a shipped preset to: its accuracy on the sample.
    assert_sample_check(card, classifier, "cifar10")
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


@pytest.mark.slow
def test_the_cifar10_recipe_starts_from_a_preset(recipe, data, tmp_path):
    out = tmp_path / "run"
    arguments = ["--data", data, "--out", str(out), "--batch-size", "16", "--epochs", "1"]
    # A learning rate too small to move the weights: the run keeps the preset's.
    run = recipe.main([*arguments, "--init-from", "cifar10_classifier", "--learning-rate", "1e-12"])
    shipped = vqkeras.from_preset("cifar10_classifier")
    for name in ("block1_conv1", "block3_conv2", "features", "scores"):
        for trained, preset in zip(
            run.model.get_layer(name).get_weights(), shipped.get_layer(name).get_weights()
        ):
            np.testing.assert_allclose(trained, preset, atol=1e-8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init_from"] == "cifar10_classifier" and metrics["learning_rate"] == 1e-12
