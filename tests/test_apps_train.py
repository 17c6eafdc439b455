import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import blob_images, subprocess_env

import vqkeras
from vqkeras import distribution
from vqkeras.apps.cli import main
from vqkeras.evaluation import evaluate_reconstructions


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "blobs.npz"
    np.savez(path, images=blob_images(20))
    return str(path)


def train(data, out, *extra):
    arguments = ["train", "--family", "ema-vqvae", "--data", data, "--out", str(out)]
    sizes = ["--channels", "8,16", "--latent-dim", "4", "--num-embeddings", "16"]
    return main([*arguments, *sizes, "--batch-size", "8", "--quiet", *extra])


def test_train_writes_a_run_resumes_it_and_refuses_other_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "1") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_images"] == 18 and summary["validation_images"] == 2
    assert summary["epochs"] == 1 and summary["image_shape"] == [16, 16, 1]
    for name in ("run.json", "metrics.json", "training_log.csv", "reconstructions/epoch_001.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").rglob("*tfevents*"))
    model = vqkeras.from_preset(out / "preset")
    assert model.num_embeddings == 16
    # The summary's metrics are the held-out images' metrics of the saved model.
    held_out = summary["validation"]
    assert held_out["images"] == 2 and 0 <= held_out["codebook_usage"] <= 1

    # The same command with more epochs continues the run.
    assert train(data, out, "--epochs", "2") == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    with open(out / "training_log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    assert (out / "reconstructions" / "epoch_002.png").is_file()

    # Other settings in the same folder are refused, naming what changed.
    assert train(data, out, "--epochs", "2", "--seed", "5") == 2
    assert "other settings (seed: 0 -> 5)" in capsys.readouterr().err


def test_train_augments_on_request(data, tmp_path, capsys):
    assert train(data, tmp_path / "run", "--epochs", "1", "--augment", "shift") == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["augment"] == ["shift"]
    metadata = json.loads((tmp_path / "run" / "preset" / "metadata.json").read_text())
    assert metadata["training"]["augmentation"] == ["shift"]

    from vqkeras.apps.cli import build_parser

    bare = ["train", "--family", "ae", "--data", data, "--out", "r", "--augment"]
    assert build_parser().parse_args(bare).augment == ["flip", "shift"]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*bare, "flip,rotate"])
    assert "subset of flip, shift; received 'flip,rotate'" in capsys.readouterr().err


def test_train_refuses_a_folder_with_other_files_and_bad_arguments(data, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert train(data, tmp_path / "busy") == 2
    assert "is not a vqkeras training run" in capsys.readouterr().err
    assert train(data, tmp_path / "a", "--validation-fraction", "1.5") == 2
    assert "--validation-fraction must be in (0, 1). Received: 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(data, tmp_path / "b", "--channels", "8,x")
    assert "expected positive integers separated by commas" in capsys.readouterr().err
    assert train(data, tmp_path / "c", "--channels", "8,16,32,64,128") == 2
    assert "multiples of 32" in capsys.readouterr().err


def test_train_held_out_metrics_match_evaluation(data, tmp_path, capsys):
    out = tmp_path / "ae"
    arguments = ["train", "--family", "ae", "--data", data, "--out", str(out), "--epochs", "1"]
    assert main([*arguments, "--channels", "8", "--batch-size", "10", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    images = np.load(data)["images"]
    order = np.random.default_rng(0).permutation(len(images))
    held_out = images[order[:2]]
    expected = evaluate_reconstructions(vqkeras.from_preset(out / "preset"), held_out)
    np.testing.assert_allclose(summary["validation"]["psnr_db"], expected["psnr_db"], rtol=1e-5)
    assert "codebook_usage" not in summary["validation"]


def test_train_offers_and_trains_a_registered_family(data, tmp_path, capsys, tiny_family):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    choices = "{ae,vae,klvae,vqvae,ema-vqvae,rqvae,vqvae2,fsq-vae,lfq-vae,gumbel-vae,vqgan,adversarial-klvae,tiny-ae}"
    assert f"--family {choices}" in capsys.readouterr().out
    out = tmp_path / "tiny"
    arguments = ["train", "--family", tiny_family, "--data", data, "--out", str(out)]
    assert (
        main([*arguments, "--channels", "4", "--epochs", "1", "--batch-size", "9", "--quiet"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["family"] == tiny_family and summary["epochs"] == 1
    model = vqkeras.from_preset(out / "preset")
    assert type(model) is vqkeras.models.Autoencoder and model.encoder.latent_dim == 3


def _classifier_preset(path, size=16):
    """A tiny untrained classifier preset of `size`x`size` grayscale images."""
    classifier = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_a"),
            keras.layers.Conv2D(4, 3, strides=2, name="conv_b"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="tiny_classifier",
    )
    vqkeras.presets.save_to_preset(classifier, path)
    return str(path)


def test_train_vqgan_with_a_perceptual_loss_resumes_and_saves_the_inference_model(
    data, tmp_path, capsys
):
    out = tmp_path / "vqgan"
    classifier = _classifier_preset(tmp_path / "classifier")
    gan = [
        "--discriminator-start",
        "2",
        "--adversarial-weight",
        "0.5",
        "--adam-betas",
        "0.5",
        "0.9",
    ]
    gan += ["--discriminator-learning-rate", "3e-3", "--perceptual-weight", "0.5"]
    arguments = ["train", "--family", "vqgan", "--data", data, "--out", str(out), *gan]
    sizes = ["--channels", "4,8", "--latent-dim", "4", "--num-embeddings", "8"]
    common = [*arguments, *sizes, "--batch-size", "6", "--quiet"]
    assert main([*common, "--perceptual-features", classifier, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*common, "--perceptual-features", classifier, "--epochs", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["train_images"] == 18
    with open(out / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    # Three steps an epoch: the adversarial terms count from the third step on.
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["adaptive_weight"]) > 0 and float(rows[1]["perceptual_loss"]) > 0
    assert float(rows[0]["discriminator_loss"]) < float(rows[1]["discriminator_loss"])
    model = vqkeras.from_preset(out / "preset")
    assert type(model) is vqkeras.models.VQVAE and model.num_embeddings == 8
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert metadata["training"]["perceptual_features"] == classifier
    assert metadata["training"]["discriminator_start"] == 2
    assert metadata["training"]["adversarial_weight"] == 0.5
    assert metadata["training"]["adam_betas"] == [0.5, 0.9]
    assert metadata["training"]["discriminator_learning_rate"] == 3e-3
    assert metadata["training"]["perceptual_weight"] == 0.5

    # The perceptual loss is the adversarial families' only: another family refuses it.
    other = ["train", "--family", "ema-vqvae", "--data", data, "--out", str(tmp_path / "b")]
    assert main([*other, "--perceptual-features", classifier, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--perceptual-features applies to the families vqgan, adversarial-klvae" in error
    assert main([*other, "--discriminator-learning-rate", "1e-4", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--discriminator-learning-rate applies to the families vqgan" in error
    assert main([*other, "--adam-betas", "0.5", "1.0", "--quiet"]) == 2
    assert "--adam-betas must both lie in [0, 1). Received: 0.5 1.0." in capsys.readouterr().err
    gan_without_features = ["train", "--family", "vqgan", "--data", data, "--out", str(out) + "2"]
    assert main([*gan_without_features, "--perceptual-weight", "0.5", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "Received --perceptual-weight 0.5 without --perceptual-features." in error
    assert not (tmp_path / "b").exists() and not (tmp_path / "vqgan2").exists()


# `vqkeras train --distribute` on two fake CPU devices, in a fresh interpreter:
# the devices must be split before the backend starts.
DISTRIBUTED_TRAIN = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import keras
if keras.config.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from vqkeras.apps.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(keras.config.backend() != "torch", reason="the PyTorch backend's error")
def test_train_distribute_is_refused_on_torch(data, tmp_path, capsys):
    assert train(data, tmp_path / "run", "--distribute") == 2
    error = capsys.readouterr().err
    assert "--distribute: Data-parallel training works on the 'jax' and 'tensorflow'" in error
    assert "docs/distributed.md" in error


@pytest.mark.skipif(keras.config.backend() == "torch", reason="needs JAX or TensorFlow")
def test_train_distribute_checks_the_batch_size_against_the_devices(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(distribution, "device_count", lambda: 3)
    assert train(data, tmp_path / "run", "--distribute") == 2
    assert "batch_size=8 with 3 devices; use e.g. 6 or 9" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(keras.config.backend() == "torch", reason="needs JAX or TensorFlow")
@pytest.mark.parametrize(
    # VQGAN: two optimizer groups and a step counter, on JAX's devices
    # (TensorFlow's logical CPUs pass too, with --every-backend).
    "family",
    [
        pytest.param("ema-vqvae", marks=pytest.mark.slow),
        pytest.param("vqgan", marks=pytest.mark.slow(backend="jax")),
    ],
)
def test_train_distribute_on_two_devices(tmp_path, family):
    path = tmp_path / "blobs.npz"
    np.savez(path, images=blob_images(21))  # 2 held out, 19 to train: 18 on 2 devices
    out = tmp_path / "run"
    arguments = ["train", "--family", family, "--data", str(path), "--out", str(out)]
    sizes = ["--channels", "8,16", "--latent-dim", "4", "--num-embeddings", "16"]
    result = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_TRAIN, *arguments, *sizes, "--batch-size", "4"]
        + ["--epochs", "1", "--quiet", "--distribute"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["devices"] == 2 and summary["dropped_for_devices"] == 1
    assert summary["train_images"] == 18 and summary["validation"]["images"] == 2
    model = vqkeras.from_preset(out / "preset")
    assert model.num_embeddings == 16


def test_train_anneals_the_gumbel_temperature_and_keeps_the_schedule(data, tmp_path, capsys):
    out = tmp_path / "gumbel"
    arguments = ["train", "--family", "gumbel-vae", "--data", data, "--out", str(out)]
    sizes = ["--channels", "8", "--latent-dim", "4", "--num-embeddings", "16", "--batch-size", "9"]
    gumbel = ["--gumbel-temperature", "2", "0.5", "--gumbel-anneal-epochs", "4"]
    assert main([*arguments, *sizes, *gumbel, "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    # 18 training images in batches of 9: 2 steps per epoch, 8 to anneal from 2 to 0.5.
    # The preset keeps the temperature of the last step run, step 1.
    preset = vqkeras.from_preset(str(out / "preset"))
    expected = 2.0 * (0.5 / 2.0) ** (1 / 8)
    temperature = keras.ops.convert_to_numpy(preset.quantizer.temperature)
    np.testing.assert_allclose(temperature, expected, rtol=1e-6)
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert metadata["training"]["gumbel_temperature"] == [2.0, 0.5]
    # Resumed with more epochs, the anneal keeps its length: step 3 of 8.
    assert main([*arguments, *sizes, *gumbel, "--epochs", "2", "--quiet"]) == 0
    preset = vqkeras.from_preset(str(out / "preset"))
    expected = 2.0 * (0.5 / 2.0) ** (3 / 8)
    temperature = keras.ops.convert_to_numpy(preset.quantizer.temperature)
    np.testing.assert_allclose(temperature, expected, rtol=1e-6)
    # Other families refuse the options.
    assert train(data, tmp_path / "other", "--gumbel-anneal-epochs", "2") == 2
    assert "apply to --family gumbel-vae. Received: --family ema-vqvae" in capsys.readouterr().err


def test_train_sets_the_codebook_options_records_them_and_resumes(data, tmp_path, capsys):
    out = tmp_path / "codebook"
    codebook = ["--code-dim", "3", "--normalize-codes", "--kmeans-init"]
    codebook += ["--gradient-estimator", "rotation"]
    assert train(data, out, "--epochs", "1", *codebook) == 0
    capsys.readouterr()
    expected = {
        "code_dim": 3,
        "normalize_codes": True,
        "kmeans_init": True,
        "gradient_estimator": "rotation",
    }
    settings = json.loads((out / "run.json").read_text())
    assert {name: settings[name] for name in expected} == expected
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert {name: metadata["training"][name] for name in expected} == expected
    config = vqkeras.from_preset(out / "preset").quantizer.get_config()
    assert {name: config[name] for name in expected} == expected
    # Resumed with the same options; without them, the run is another one.
    assert train(data, out, "--epochs", "2", *codebook) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    assert train(data, out, "--epochs", "2", *codebook[:-2]) == 2
    assert "(gradient_estimator: 'rotation' -> None)" in capsys.readouterr().err


def test_train_without_codebook_options_records_none_and_the_card_the_defaults(
    data, tmp_path, capsys
):
    # None in run.json, as in the runs recorded before the options existed.
    out = tmp_path / "plain"
    assert train(data, out, "--epochs", "1") == 0
    settings = json.loads((out / "run.json").read_text())
    assert [settings[name] for name in ("code_dim", "normalize_codes", "kmeans_init")] == [None] * 3
    assert settings["gradient_estimator"] is None
    training = json.loads((out / "preset" / "metadata.json").read_text())["training"]
    assert (training["code_dim"], training["normalize_codes"]) == (None, False)
    assert (training["kmeans_init"], training["gradient_estimator"]) == (False, "straight_through")


@pytest.mark.parametrize(
    "family, flags, message",
    [
        (
            "fsq-vae",
            ["--code-dim", "3", "--kmeans-init"],
            "--code-dim applies to vqvae, ema-vqvae, vqvae2, vqgan; --kmeans-init applies to "
            "vqvae, ema-vqvae, rqvae, vqvae2, vqgan. Received: --family fsq-vae.",
        ),
        (
            "rqvae",
            ["--kmeans-init", "--gradient-estimator", "rotation"],
            "--gradient-estimator applies to vqvae, ema-vqvae, vqvae2, vqgan. "
            "Received: --family rqvae.",
        ),
    ],
)
def test_train_refuses_codebook_options_a_family_does_not_take(
    data, tmp_path, capsys, family, flags, message
):
    out = tmp_path / "refused"
    arguments = ["train", "--family", family, "--data", data, "--out", str(out), *flags]
    assert main([*arguments, "--channels", "8", "--epochs", "1", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before any training, leaving no run behind
