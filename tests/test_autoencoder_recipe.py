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
    latent_dim=2,
    channels=(4, 8),
    num_residual_blocks=0,
    residual_channels=None,
    sample="mnist",
    dataset="blobs",
    test_split="blob test split",
    kl_weight=1e-6,
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
            "backend", "batch_size", "channels", "depth", "epochs", "epochs_planned", "family",
            "fit_time_this_session_s", "image_shape", "images_per_second",
            "images_per_second_per_epoch", "keras_version", "kl_weight", "latent_dim", "name",
            "num_embeddings", "num_residual_blocks", "parameters", "residual_channels", "sample",
            "scaling_factor", "schedule_epochs", "seed", "test", "train_images",
            "training_time_s", "training_time_without_validation_s", "validation_images",
            "vqkeras_version",
        ]
    )  # fmt: skip
    assert metrics["train_images"] == 22 and metrics["validation_images"] == 8
    assert metrics["epochs"] == 1 and metrics["schedule_epochs"] == 1

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
