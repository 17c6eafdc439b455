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
from vqkeras.dependencies import tensorflow_available
from vqkeras.evaluation import evaluate_prior, evaluate_reconstructions
from vqkeras.models import PixelCNNPrior


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
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["train_images"] == 18 and summary["validation_images"] == 2
    assert summary["epochs"] == 1 and summary["image_shape"] == [16, 16, 1]
    for name in ("run.json", "metrics.json", "training_log.csv", "reconstructions/epoch_001.png"):
        assert (out / name).is_file(), name
    if tensorflow_available():
        assert any((out / "tensorboard").rglob("*tfevents*"))
    else:  # TensorBoard logs need TensorFlow: skipped with a notice
        assert not (out / "tensorboard").exists()
        assert "vqkeras: note: no TensorBoard logs" in captured.err
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
    pytest.importorskip("tensorflow", reason="augmentation runs in a tf.data pipeline")
    assert train(data, tmp_path / "run", "--epochs", "1", "--augment", "shift") == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["augment"] == ["shift"]
    metadata = json.loads((tmp_path / "run" / "preset" / "metadata.json").read_text())
    assert metadata["training"]["augmentation"] == ["shift"]

    from vqkeras.apps.cli import build_parser

    bare = ["train", "--family", "ae", "--data", data, "--out", "r", "--augment"]
    assert build_parser(bare).parse_args(bare).augment == ["flip", "shift"]
    with pytest.raises(SystemExit):
        build_parser(bare).parse_args([*bare, "flip,rotate"])
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
    choices = (
        "{ae,vae,klvae,vqvae,ema-vqvae,rqvae,vqvae2,fsq-vae,lfq-vae,gumbel-vae,vqgan,"
        "adversarial-klvae,pixelcnn-prior,transformer-prior,maskgit-prior,tiny-ae}"
    )
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
    assert (
        "--perceptual-features is an option of vqgan, adversarial-klvae. Received: --family "
        "ema-vqvae (`vqkeras train --family ema-vqvae --help` lists its options)." in error
    )
    assert main([*other, "--discriminator-learning-rate", "1e-4", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--discriminator-learning-rate is an option of vqgan, adversarial-klvae" in error
    assert main([*other, "--adam-betas", "0.5", "1.0", "--quiet"]) == 2
    assert "--adam-betas must both lie in [0, 1). Received: 0.5 1.0." in capsys.readouterr().err
    gan_without_features = ["train", "--family", "vqgan", "--data", data, "--out", str(out) + "2"]
    assert main([*gan_without_features, "--perceptual-weight", "0.5", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "Received perceptual_weight=0.5 without perceptual_features." in error
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
    gumbel = ["--temperatures", "2,0.5", "--anneal-epochs", "4"]
    assert main([*arguments, *sizes, *gumbel, "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    # 18 training images in batches of 9: 2 steps per epoch, 8 to anneal from 2 to 0.5.
    # The preset keeps the temperature of the last step run, step 1.
    preset = vqkeras.from_preset(str(out / "preset"))
    expected = 2.0 * (0.5 / 2.0) ** (1 / 8)
    temperature = keras.ops.convert_to_numpy(preset.quantizer.temperature)
    np.testing.assert_allclose(temperature, expected, rtol=1e-6)
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert metadata["training"]["temperatures"] == [2.0, 0.5]
    assert metadata["training"]["anneal_epochs"] == 4
    # Resumed with more epochs, the anneal keeps its length: step 3 of 8.
    assert main([*arguments, *sizes, *gumbel, "--epochs", "2", "--quiet"]) == 0
    preset = vqkeras.from_preset(str(out / "preset"))
    expected = 2.0 * (0.5 / 2.0) ** (3 / 8)
    temperature = keras.ops.convert_to_numpy(preset.quantizer.temperature)
    np.testing.assert_allclose(temperature, expected, rtol=1e-6)
    # Other families refuse the options.
    assert train(data, tmp_path / "other", "--anneal-epochs", "2") == 2
    error = capsys.readouterr().err
    assert "--anneal-epochs is an option of gumbel-vae. Received: --family ema-vqvae" in error


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
    assert {name: settings["family_options"][name] for name in expected} == expected
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert {name: metadata["training"][name] for name in expected} == expected
    config = vqkeras.from_preset(out / "preset").quantizer.get_config()
    assert {name: config[name] for name in expected} == expected
    # Resumed with the same options; without them, the run is another one.
    assert train(data, out, "--epochs", "2", *codebook) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    assert train(data, out, "--epochs", "2", *codebook[:-2]) == 2
    assert "(gradient_estimator: 'rotation' -> 'straight_through')" in capsys.readouterr().err


def test_train_records_the_default_options_in_the_run_and_on_the_card(data, tmp_path, capsys):
    out = tmp_path / "plain"
    assert train(data, out, "--epochs", "1") == 0
    options = json.loads((out / "run.json").read_text())["family_options"]
    defaults = {"code_dim": None, "normalize_codes": False, "kmeans_init": False}
    assert {name: options[name] for name in defaults} == defaults
    assert options["gradient_estimator"] == "straight_through" and options["num_embeddings"] == 16
    training = json.loads((out / "preset" / "metadata.json").read_text())["training"]
    assert {name: training[name] for name in defaults} == defaults
    assert (training["family"], training["commitment_cost"]) == ("ema-vqvae", 0.25)
    assert training["channels"] == [8, 16] and training["architecture"] == "conv"


@pytest.mark.parametrize(
    "family, flags, message",
    [
        (
            "fsq-vae",
            ["--code-dim", "3", "--kmeans-init"],
            "--code-dim is an option of vqvae, ema-vqvae, vqvae2, vqgan; --kmeans-init is an "
            "option of vqvae, ema-vqvae, rqvae, vqvae2, vqgan. Received: --family fsq-vae",
        ),
        (
            "rqvae",
            ["--kmeans-init", "--gradient-estimator", "rotation"],
            "--gradient-estimator is an option of vqvae, ema-vqvae, vqvae2, vqgan. "
            "Received: --family rqvae",
        ),
        (
            "pixelcnn-prior",
            ["--model", "vqvae_mnist", "--channels", "8"],
            "--channels is an option of --architecture conv, --architecture ldm. Received: --family "
            "pixelcnn-prior",
        ),
    ],
)
def test_train_refuses_options_a_family_does_not_take(
    data, tmp_path, capsys, family, flags, message
):
    out = tmp_path / "refused"
    arguments = ["train", "--family", family, "--data", data, "--out", str(out), *flags]
    assert main([*arguments, "--epochs", "1", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before any training, leaving no run behind


def test_train_help_lists_the_options_of_the_family_asked_for(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--family", "fsq-vae", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "options of --family fsq-vae (`VQVAE` with a `FiniteScalarQuantizer`" in text
    assert "--levels L1,L2,... levels per channel, e.g. 8,5,5,5" in text
    assert "--channels C1,C2,..." in text and "--code-dim" not in text
    with pytest.raises(SystemExit):
        main(["train", "--family", "transformer-prior", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model PRESET_OR_DIR the VQ autoencoder whose codes the prior models" in text
    assert "--num-heads N attention heads" in text and "--channels" not in text
    # An option's bad value: its own check's message.
    assert (
        main(["train", "--family", "fsq-vae", "--data", "x", "--out", "o", "--levels", "4,1"]) == 2
    )
    assert "Every level must be an integer >= 2" in capsys.readouterr().err


def test_train_a_prior_over_a_presets_codes_resumes_and_samples(tmp_path, capsys):
    out = tmp_path / "prior"
    arguments = ["train", "--family", "pixelcnn-prior", "--model", "vqvae_mnist"]
    arguments += ["--data", "sample:mnist", "--out", str(out), "--limit", "60"]
    arguments += ["--filters", "8", "--num-blocks", "1", "--batch-size", "16", "--quiet"]
    assert main([*arguments, "--epochs", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["train_grids"], summary["validation_grids"]) == (54, 6)
    assert (summary["num_classes"], summary["grid_shape"], summary["grid"]) == (
        10,
        [7, 7],
        "indices",
    )
    prior = vqkeras.from_preset(out / "preset")
    assert type(prior) is PixelCNNPrior and (prior.num_classes, prior.filters) == (10, 8)
    # The held-out figures are the saved prior's, on the codes of the held-out images.
    codes = np.load(out / "codes.npz")["indices"]
    _, labels = vqkeras.samples.load("mnist")
    held_out = np.random.default_rng(0).permutation(60)[:6]
    expected = evaluate_prior(prior, codes[held_out], labels[held_out].astype("int32"))
    np.testing.assert_allclose(
        summary["validation"]["nll_nats_per_code"], expected["nll_nats_per_code"], rtol=1e-4
    )
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert metadata["vqvae"] == "vqvae_mnist" and metadata["training"]["family"] == "pixelcnn-prior"

    # The same command with more epochs continues the run, from the codes made once.
    assert main([*arguments, "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    sampled = tmp_path / "samples"
    # The run's folder stands for its preset.
    sampling = ["sample", "--model", "vqvae_mnist", "--prior", str(out), "--num", "4"]
    assert main([*sampling, "--label", "3", "--seed", "0", "--out", str(sampled), "--quiet"]) == 0
    capsys.readouterr()
    assert (sampled / "samples.png").is_file()
    np.testing.assert_array_equal(np.load(sampled / "codes.npz")["labels"], [3, 3, 3, 3])


def test_train_an_unconditional_prior_and_refuse_models_without_codes(data, tmp_path, capsys):
    out = tmp_path / "prior"
    arguments = ["train", "--family", "transformer-prior", "--model", "vqvae_mnist"]
    arguments += ["--data", data, "--epochs", "1", "--batch-size", "9", "--quiet"]
    sizes = ["--embed-dim", "8", "--num-heads", "2", "--num-layers", "1"]
    # The 16x16 blobs have no labels; they are resized to the model's 28x28.
    assert main([*arguments, *sizes, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] is None and summary["train_grids"] == 18
    prior = vqkeras.from_preset(out / "preset")
    assert prior.num_classes is None and prior.grid_shape == (7, 7) and prior.num_heads == 2
    assert main([*arguments, "--model", "klvae_mnist", "--out", str(tmp_path / "kl")]) == 2
    assert "no discrete codes" in capsys.readouterr().err
    # A warm start must be of the same architecture.
    warm = [*arguments, *sizes, "--out", str(tmp_path / "warm"), "--init-from", "vqvae_mnist"]
    assert main(warm) == 2
    assert "the preset holds a VQVAE, expected a TransformerPrior" in capsys.readouterr().err


def test_train_a_klvae_stores_its_measured_scaling_factor(data, tmp_path, capsys):
    out = tmp_path / "klvae"
    arguments = ["train", "--family", "klvae", "--data", data, "--out", str(out)]
    assert main([*arguments, "--channels", "8", "--epochs", "1", "--batch-size", "9"]) == 0
    printed = capsys.readouterr()
    # The summary alone on stdout; Keras's epoch lines on stderr.
    summary = json.loads(printed.out)
    assert "reconstruction_loss" in printed.err
    model = vqkeras.from_preset(out / "preset")
    assert model.scaling_factor == summary["scaling_factor"] != 1.0
    images = np.load(data)["images"]
    train_images = images[np.random.default_rng(0).permutation(len(images))[2:]]
    expected = model.compute_scaling_factor(train_images, seed=0)
    np.testing.assert_allclose(model.scaling_factor, expected, rtol=1e-4)
    metadata = json.loads((out / "preset" / "metadata.json").read_text())
    assert metadata["training"]["scaling_factor"] == model.scaling_factor
