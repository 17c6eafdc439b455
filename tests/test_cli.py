import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import small_vqvae, subprocess_env

from vqkeras import samples
from vqkeras.apps.cli import main
from vqkeras.evaluation import encode_indices, evaluate_prior, frechet_distance_of_images
from vqkeras.models import MaskGITPrior, PixelCNNPrior, TransformerPrior
from vqkeras.models.factory import build_autoencoder
from vqkeras.presets import from_preset


def test_zoo_list_and_info(capsys):
    assert main(["zoo", "list"]) == 0
    assert "vqvae_mnist" in capsys.readouterr().out
    assert main(["zoo", "info", "vqvae_mnist"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_embeddings"] == 128 and info["latent_shape"] == [7, 7, 16]


def test_evaluate_writes_metrics_and_never_clobbers(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    args = ["evaluate", "vqvae_mnist", "--input", "sample:mnist", "--limit", "32"]
    assert main([*args, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert printed["images"] == 32 and printed["psnr_db"] > 24

    assert main([*args, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--overwrite"]) == 0


def test_evaluate_reads_keras_datasets_npz(tmp_path, capsys):
    images = np.zeros((8, 28, 28), "uint8")
    np.savez(tmp_path / "d.npz", x_test=images, y_test=np.arange(8))
    assert main(["evaluate", "vqvae_mnist", "--input", str(tmp_path / "d.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "vqvae_mnst", "--input", "sample:mnist"], "Did you mean 'vqvae_mnist'"),
        (["evaluate", "vqvae_mnist", "--input", "missing.npz"], "does not exist"),
        (["evaluate", "vqvae_mnist", "--input", "sample:cifar10", "--strict"], "expects 1 channel"),
        (["zoo", "info", "nope"], "Unknown preset 'nope'"),
        (
            ["reconstruct", "--model", "vqvae_mnst", "--input", "sample:mnist", "--out", "o"],
            "Unknown preset 'vqvae_mnst'",
        ),
        (
            ["reconstruct", "--model", "vqvae_mnist", "--input", "nowhere/", "--out", "o"],
            "Input 'nowhere/' does not exist",
        ),
        (
            [
                "export-latents",
                "--model",
                "vqvae_mnist",
                "--input",
                "sample:mnist",
                "--out",
                "c.txt",
            ],
            "Cannot tell the format of --out 'c.txt'",
        ),
        (
            ["sample", "--model", "vqvae_mnist", "--prior", "no_prior", "--out", "o"],
            "Unknown preset 'no_prior'",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("vqkeras: error: ") and err.count("\n") == 1


def test_damaged_npz(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    assert main(["evaluate", "vqvae_mnist", "--input", str(tmp_path / "bad.npz")]) == 2
    assert "Cannot read" in capsys.readouterr().err


def test_the_command_prints_its_own_lines_only(tmp_path):
    # The console script's launcher: a run's stderr holds no native start-up
    # notices of TensorFlow (nor anything else that is not vqkeras's own).
    result = subprocess.run(
        [sys.executable, "-m", "vqkeras_cli", "evaluate", "vqvae_mnist", "--input", "sample:mnist"]
        + ["--limit", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 8
    foreign = [line for line in result.stderr.splitlines() if not line.startswith("vqkeras:")]
    assert foreign == []


def test_the_launcher_filters_native_log_lines_only(capfd):
    from vqkeras_cli import native_log_lines_filtered

    native = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796096601.933972   14420 port.cc:153] oneDNN custom operations are on.\n",
        "W0000 00:00:1796096601.969957   14420 cpu_feature_guard.cc:227] This TensorFlow binary\n",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.\n",
    ]
    native.append(
        "E0000 00:00:1796102565.952174    3551 meta_optimizer.cc:967] remapper failed: "
        "INVALID_ARGUMENT: Mutation::Apply error\n"
    )
    kept = ["F0000 00:00:1796096601.9 14420 loader.cc:9] a fatal error\n", "Traceback: kept\n"]
    with native_log_lines_filtered():
        for line in [native[0], kept[0], *native[1:], kept[1]]:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(kept)
    # Python's stderr is untouched outside, and reached the terminal inside.
    with native_log_lines_filtered():
        print("vqkeras: note: direct", file=sys.stderr)
    assert capfd.readouterr().err == "vqkeras: note: direct\n"


def test_module_entry_point_help(tmp_path):
    # From another folder, so that the working directory on sys.path plays no part.
    result = subprocess.run(
        [sys.executable, "-m", "vqkeras.apps", "evaluate", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert result.returncode == 0 and "--input" in result.stdout


def test_evaluate_converts_channels_and_resizes_with_size_only(capsys):
    argv = ["evaluate", "vqvae_mnist", "--input", "sample:cifar10", "--limit", "4", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    # At their own size, 32x32: 8x8 codes.
    assert metrics["images"] == 4 and metrics["latent_grid"] == [8, 8]
    assert "converted 4 image(s) of sample:cifar10 to grayscale" in captured.err
    assert "resized" not in captured.err
    assert main([*argv, "--size", "28x28"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["latent_grid"] == [7, 7]
    assert "resized 4 image(s) of sample:cifar10 to 28x28" in captured.err


@pytest.mark.parametrize(
    "command, flags",
    [
        ("reconstruct", ["--model", "--input", "--out", "--limit", "--batch-size", "--strict"]),
        ("export-latents", ["--model", "--input", "--decode", "--out", "--format", "--overwrite"]),
        (
            "sample",
            ["--model", "--prior", "--num", "--label", "--temperature", "--top-k", "--seed"],
        ),
    ],
)
def test_every_command_has_help(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vqkeras {command}")
    assert all(flag in out for flag in [*flags, "--quiet"])


def test_evaluate_a_prior_and_a_classifier(tmp_path, capsys):
    args = ["evaluate", "pixelcnn_vqvae_mnist", "--input", "sample:mnist", "--limit", "64"]
    assert main([*args, "--samples-per-class", "2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["vqvae"] == "vqvae_mnist" and metrics["grids"] == 64
    assert 1.0 < metrics["nll_nats_per_code"] < 2.5
    assert metrics["conditional_sample_agreement"]["samples"] == 20

    assert main(["evaluate", "mnist_classifier", "--input", "sample:mnist"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.98

    # Conditional priors and classifiers need labels.
    np.savez(tmp_path / "unlabelled.npz", images=np.zeros((4, 28, 28), "uint8"))
    unlabelled = ["--input", str(tmp_path / "unlabelled.npz")]
    assert main(["evaluate", "mnist_classifier", *unlabelled]) == 2
    assert "needs labelled images" in capsys.readouterr().err
    assert main(["evaluate", "pixelcnn_vqvae_mnist", *unlabelled]) == 2
    assert "class-conditional prior needs labelled images" in capsys.readouterr().err


def test_evaluate_reports_the_frechet_distance_in_a_named_classifiers_features(capsys):
    args = ["evaluate", "vqvae_mnist", "--input", "sample:mnist", "--limit", "64", "--quiet"]
    assert main([*args, "--frechet-features", "mnist_classifier"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["frechet_features"] == "mnist_classifier/flatten"
    images, _ = samples.load("mnist")
    model = from_preset("vqvae_mnist")
    reconstructions = np.clip(model.predict(images[:64], verbose=0), 0, 1)
    expected = frechet_distance_of_images(images[:64], reconstructions, "mnist_classifier")
    np.testing.assert_allclose(metrics["frechet_distance"], expected["frechet_distance"], rtol=1e-3)
    assert metrics["frechet_distance"] > 0 and "fid" not in json.dumps(metrics).lower()

    prior = ["evaluate", "pixelcnn_vqvae_mnist", "--input", "sample:mnist", "--limit", "8"]
    assert main([*prior, "--frechet-features", "mnist_classifier"]) == 2
    assert "an autoencoder's reconstructions; 'pixelcnn_vqvae_mnist' holds a PixelCNNPrior" in (
        capsys.readouterr().err
    )


def test_evaluate_the_priors_of_a_vqvae2(tmp_path, capsys):
    sizes = {"latent_dim": 4, "channels": (8, 8), "num_embeddings": 16}
    build_autoencoder("vqvae2", (32, 32, 1), **sizes).save_to_preset(tmp_path / "vqvae2")
    arguments = {"num_classes": 3, "filters": 8, "num_blocks": 2, "embedding_dim": 4}
    priors = {
        "top": PixelCNNPrior(16, (4, 4), **arguments),
        "bottom": PixelCNNPrior(
            16, (8, 8), condition_num_embeddings=16, condition_grid_shape=(4, 4), **arguments
        ),
    }
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32), dtype="uint8")
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    codes = from_preset(str(tmp_path / "vqvae2")).encode_indices(images[..., None])
    expected = {
        "top": evaluate_prior(priors["top"], codes["top"], labels),
        "bottom": evaluate_prior(priors["bottom"], (codes["bottom"], codes["top"]), labels),
    }
    for level, prior in priors.items():
        prior.save_to_preset(tmp_path / level, metadata={"vqvae": str(tmp_path / "vqvae2")})
        args = ["evaluate", str(tmp_path / level), "--input", str(tmp_path / "data.npz")]
        assert main(args) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["grids"] == 6
        np.testing.assert_allclose(
            metrics["nll_nats_per_code"], expected[level]["nll_nats_per_code"], rtol=1e-5
        )


def test_train_takes_its_images_as_input_or_data():
    from vqkeras.apps.cli import build_parser

    for flag in ("--input", "--data"):
        args = build_parser().parse_args(
            ["train", "--family", "ae", flag, "a/", "b.npz"] + ["--out", "r"]
        )
        assert args.data == ["a/", "b.npz"]


@pytest.mark.parametrize("kind", [TransformerPrior, MaskGITPrior])
def test_evaluate_a_transformer_prior(kind, tmp_path, capsys):
    vqvae = small_vqvae()  # 16x16 images to 4x4 grids of K=16 codes
    vqvae.build((None, 16, 16, 1))
    vqvae.save_to_preset(tmp_path / "vqvae")
    prior = kind(16, (4, 4), num_classes=3, embed_dim=8, num_heads=2, num_layers=1)
    prior.build()
    prior.save_to_preset(tmp_path / "prior", metadata={"vqvae": str(tmp_path / "vqvae")})
    images = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16), dtype="uint8")
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    args = ["evaluate", str(tmp_path / "prior"), "--input", str(tmp_path / "data.npz")]
    assert main([*args, "--samples-per-class", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["grids"] == 6
    if kind is TransformerPrior:
        codes = encode_indices(vqvae, images[..., None])
        expected = evaluate_prior(prior, codes, labels)["nll_nats_per_code"]
        np.testing.assert_allclose(metrics["nll_nats_per_code"], expected, rtol=1e-5)
    else:  # MaskGIT's loss is no likelihood: named for what it is.
        assert "nll_nats_per_code" not in metrics
        np.testing.assert_allclose(metrics["masked_code_cross_entropy_nats"], np.log(16), rtol=0.2)
