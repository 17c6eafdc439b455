import json
import os
import subprocess
import sys

import numpy as np
import pytest
from vqkeras.apps.cli import main


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


def test_module_entry_point_help(tmp_path):
    # From another folder: `python -m` puts the working directory on sys.path,
    # and the source tree's vqkeras/ has no apps/ inside.
    result = subprocess.run(
        [sys.executable, "-m", "vqkeras.apps", "evaluate", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert result.returncode == 0 and "--input" in result.stdout


def test_evaluate_converts_channels_and_sizes_with_a_notice(capsys):
    argv = ["evaluate", "vqvae_mnist", "--input", "sample:cifar10", "--limit", "4", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 4
    assert "converted 4 image(s) of sample:cifar10 to grayscale" in captured.err
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
