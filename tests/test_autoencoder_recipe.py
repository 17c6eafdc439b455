import dataclasses
import json

import numpy as np
import pytest
from conftest import blob_images

import vqkeras
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.zoo import autoencoder_recipe
from vqkeras.zoo.autoencoder_recipe import AutoencoderRecipe, main

# A KL-VAE recipe small enough for a test, on MNIST-shaped images.
RECIPE = AutoencoderRecipe(
    name="tiny_klvae",
    family="klvae",
    image_shape=(28, 28, 1),
    sample="mnist",
    dataset="blobs",
    test_split="blob test split",
    options={"latent_dim": 2, "kl_weight": 1e-6},
    architecture_options={"channels": (4, 8), "num_residual_blocks": 0},
)


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setattr(autoencoder_recipe, "VALIDATION_SIZE", 8)
    path = tmp_path / "blobs.npz"
    x = blob_images(40, size=28)[..., 0]
    np.savez(path, x_train=x[:30], y_train=np.zeros(30), x_test=x[30:], y_test=np.zeros(10))
    return str(path)


def test_the_recipe_writes_its_metrics_and_preset_and_refuses_a_foreign_preset(
    data, tmp_path, capsys
):
    out = tmp_path / "run"
    main(RECIPE, "tiny", ["--data", data, "--out", str(out), "--epochs", "1", "--batch-size", "8"])
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rindex("\n{\n") :]) == metrics  # printed last
    assert sorted(metrics) == sorted(
        [
            "architecture", "architecture_options", "backend", "batch_size", "betas", "epochs",
            "epochs_planned", "family", "fit_time_this_session_s", "frechet_features",
            "images_per_second", "images_per_second_per_epoch", "init_from", "keras_version",
            "learning_rate", "name", "options", "parameters", "scaling_factor",
            "schedule_epochs", "seed", "test", "train_images", "training_time_s",
            "training_time_without_validation_s", "validation_images", "vqkeras_version",
        ]
    )  # fmt: skip
    assert metrics["train_images"] == 22 and metrics["validation_images"] == 8
    assert metrics["epochs"] == 1 and metrics["schedule_epochs"] == 1
    assert metrics["options"] == {"latent_dim": 2, "kl_weight": 1e-6}

    model = vqkeras.from_preset(out / "preset")
    # The scaling factor was measured before saving, and the test metrics are the preset's.
    assert model.scaling_factor == metrics["scaling_factor"] != 1.0
    test_images = np.load(data)["x_test"][..., None]
    expected = evaluate_reconstructions(model, test_images)["psnr_db"]
    np.testing.assert_allclose(metrics["test"]["psnr_db"], expected, rtol=1e-5)
    card = json.loads((out / "preset" / "metadata.json").read_text())
    assert card["recipe"] == "zoo/tiny_klvae/recipe.py" and card["metrics"] == metrics["test"]
    assert card["training"]["epochs"] == 1 and card["sample_check"]["sample"] == "mnist"

    # A folder with a preset that no run there wrote is refused before training.
    other = tmp_path / "other"
    other.mkdir()
    (out / "preset").rename(other / "preset")
    with pytest.raises(FileExistsError, match="no earlier run"):
        main(RECIPE, "tiny", ["--data", data, "--out", str(other), "--epochs", "1"])
    assert sorted(p.name for p in other.iterdir()) == ["preset"]


# A VQGAN recipe started from a trained VQ-VAE preset, with a perceptual loss
# and the Fréchet distance in the shipped `mnist_classifier`'s features.
VQGAN_RECIPE = dataclasses.replace(
    RECIPE,
    name="tiny_vqgan",
    family="vqgan",
    options={
        "latent_dim": 4,
        "num_embeddings": 8,
        "perceptual_features": "mnist_classifier",
        "discriminator_learning_rate": 3e-4,
    },
    betas=(0.5, 0.9),
    frechet_features="mnist_classifier",
)


@pytest.mark.slow
def test_an_adversarial_recipe_starts_from_a_preset_and_reports_frechet_distances(data, tmp_path):
    vqvae_recipe = dataclasses.replace(
        VQGAN_RECIPE,
        name="tiny_vqvae",
        family="ema-vqvae",
        options={"latent_dim": 4, "num_embeddings": 8},
    )
    arguments = ["--data", data, "--epochs", "1", "--batch-size", "8"]
    main(vqvae_recipe, "tiny", [*arguments, "--out", str(tmp_path / "vqvae")])

    recipe = dataclasses.replace(VQGAN_RECIPE, init_from=str(tmp_path / "vqvae" / "preset"))
    out = tmp_path / "vqgan"
    main(recipe, "tiny", [*arguments, "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert test["frechet_features"] == "mnist_classifier/flatten"
    assert test["frechet_distance"] >= 0 and test[f"{recipe.init_from}_frechet_distance"] >= 0
    assert metrics["betas"] == [0.5, 0.9] and metrics["init_from"] == recipe.init_from
    assert metrics["options"]["discriminator_learning_rate"] == 3e-4
    # The preset is the inference VQ-VAE: no discriminator.
    assert type(vqkeras.from_preset(out / "preset")).__name__ == "VQVAE"


def test_starting_from_a_preset_of_another_architecture_is_refused(data, tmp_path):
    main(RECIPE, "tiny", ["--data", data, "--out", str(tmp_path / "kl"), "--epochs", "1"])
    wider = dataclasses.replace(RECIPE, architecture_options={"channels": (4, 16)})
    arguments = ["--data", data, "--out", str(tmp_path / "wider"), "--epochs", "1"]
    with pytest.raises(ValueError, match=r"architectures differ in \['decoder', 'encoder'\]"):
        main(wider, "tiny", [*arguments, "--init-from", str(tmp_path / "kl" / "preset")])
    assert not (tmp_path / "wider" / "preset").exists()


def test_an_fsq_recipe_builds_its_levels():
    fsq = dataclasses.replace(
        RECIPE, family="fsq-vae", name="tiny_fsq", options={"latent_dim": 4, "levels": (8, 5, 5, 5)}
    )
    family = vqkeras.families.get_family("fsq-vae")
    model = autoencoder_recipe.build_model(fsq, family.options(fsq.options), seed=0)
    assert tuple(model.quantizer.levels) == (8, 5, 5, 5)
    assert model.num_embeddings == 1000
