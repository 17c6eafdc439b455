import dataclasses
import json

import numpy as np
import pytest
from conftest import blob_images

import vqkeras
from vqkeras.evaluation import encode_indices, evaluate_prior
from vqkeras.zoo import prior_recipe
from vqkeras.zoo.prior_recipe import PriorRecipe, main

# A PixelCNN prior small enough for a test, over the codes of the shipped MNIST VQ-VAE.
RECIPE = PriorRecipe(
    name="tiny_prior",
    family="pixelcnn-prior",
    vqvae="vqvae_mnist",
    image_shape=(28, 28, 1),
    num_classes=10,
    sample="mnist",
    dataset="blobs",
    options={"filters": 8, "num_blocks": 1, "kernel_size": 3, "embedding_dim": 8},
)


def write_data(path, size, channels):
    x = blob_images(40, size=size, channels=channels)
    y = np.random.default_rng(0).integers(0, 10, 40)
    if channels == 1:
        x = x[..., 0]
    np.savez(path, x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    return str(path)


@pytest.fixture(autouse=True)
def small_validation_split(monkeypatch):
    monkeypatch.setattr(prior_recipe, "VALIDATION_SIZE", 8)


def run(recipe, data, out):
    main(recipe, "tiny", ["--data", data, "--out", str(out), "--epochs", "1", "--batch-size", "8"])
    return json.loads((out / "metrics.json").read_text())


def test_a_prior_recipe_starts_from_a_preset_of_the_same_architecture_only(tmp_path):
    data = write_data(tmp_path / "blobs.npz", 28, 1)
    first = run(RECIPE, data, tmp_path / "first")
    # A learning rate too small to move the weights: the run keeps the preset's.
    arguments = ["--data", data, "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-12"]
    start = ["--init-from", str(tmp_path / "first" / "preset")]
    main(RECIPE, "tiny", [*arguments, *start, "--out", str(tmp_path / "second")])
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    np.testing.assert_allclose(
        second["test"]["nll_nats_per_code"], first["test"]["nll_nats_per_code"], rtol=1e-4
    )
    card = json.loads((tmp_path / "second" / "preset" / "metadata.json").read_text())
    assert card["training"]["initial_weights"] == start[1] and second["init_from"] == start[1]

    wider = dataclasses.replace(RECIPE, options={**RECIPE.options, "filters": 16})
    with pytest.raises(ValueError, match=r"architectures differ in \['filters'\]"):
        main(wider, "tiny", [*arguments, *start, "--out", str(tmp_path / "third")])


def test_the_learning_rate_option_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(RECIPE, "tiny", ["--data", "x.npz", "--out", "o", "--learning-rate", "0"])
    assert "--learning-rate must be positive, got 0.0" in capsys.readouterr().err


@pytest.mark.slow
def test_the_recipe_trains_on_the_codes_of_mirrored_images_too(tmp_path):
    data = write_data(tmp_path / "blobs.npz", 28, 1)
    out = tmp_path / "run"
    metrics = run(dataclasses.replace(RECIPE, mirrored_training_images=True), data, out)

    assert metrics["train_grids"] == 2 * 22 and metrics["mirrored_training_images"]
    codes = np.load(out / "codes.npz")
    train_images = np.load(data)["x_train"][:22, :, :, None]
    vqvae = vqkeras.from_preset("vqvae_mnist")
    np.testing.assert_array_equal(
        codes["train_mirrored_indices"], encode_indices(vqvae, train_images[:, :, ::-1])
    )
    card = json.loads((out / "preset" / "metadata.json").read_text())
    assert "mirrored" in card["dataset"] and card["metrics"] == metrics["test"]
    prior = vqkeras.from_preset(out / "preset")
    expected = evaluate_prior(prior, codes["test_indices"], codes["test_labels"])
    np.testing.assert_allclose(
        metrics["test"]["nll_nats_per_code"], expected["nll_nats_per_code"], rtol=1e-5
    )


@pytest.mark.slow
def test_a_depth_recipe_models_the_first_levels_of_an_rqvaes_codes(tmp_path):
    data = write_data(tmp_path / "blobs.npz", 32, 3)
    out = tmp_path / "run"
    recipe = dataclasses.replace(
        RECIPE,
        vqvae="rqvae_cifar10",
        image_shape=(32, 32, 3),
        sample="cifar10",
        options={**RECIPE.options, "depth": 2},
    )
    metrics = run(recipe, data, out)

    codes = np.load(out / "codes.npz")
    assert codes["test_indices"].shape == (10, 8, 8, 4)  # the cache keeps every level
    prior = vqkeras.from_preset(out / "preset")
    assert prior.depth == 2 and metrics["grid_shape"] == [8, 8]
    expected = evaluate_prior(prior, codes["test_indices"][..., :2], codes["test_labels"])
    np.testing.assert_allclose(
        metrics["test"]["nll_nats_per_code"], expected["nll_nats_per_code"], rtol=1e-5
    )
    assert np.load(out / "samples.npz")["codes"].shape == (100, 8, 8, 2)
    card = json.loads((out / "preset" / "metadata.json").read_text())
    assert card["sample_check"]["vqvae"] == "rqvae_cifar10"
