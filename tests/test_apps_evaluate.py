"""`vqkeras evaluate` on images at their own sizes, and the models that take
one size only (the command's other tests are in test_cli.py)."""

import json

import numpy as np
import pytest
from conftest import blob_images, small_vqvae
from PIL import Image

from vqkeras.apps.cli import main
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.presets import from_preset


@pytest.fixture(scope="module")
def vqvae_preset(tmp_path_factory):
    model = small_vqvae()
    model.build((None, 16, 16, 1))
    path = tmp_path_factory.mktemp("presets") / "vqvae"
    model.save_to_preset(path)
    return str(path)


def run(capsys, *argv):
    code = main([*map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_image_files_are_measured_at_their_own_sizes(vqvae_preset, tmp_path, capsys):
    rng = np.random.default_rng(0)
    sizes = {"a.png": (37, 53), "b.png": (16, 16), "c.png": (5, 3)}
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, size, dtype="uint8")).save(tmp_path / name)
    code, metrics = run(capsys, "evaluate", vqvae_preset, "--input", tmp_path)
    assert code == 0 and metrics["images"] == 3
    per_image = metrics["per_image"]
    assert [entry["size"] for entry in per_image] == [list(size) for size in sizes.values()]
    assert [entry["latent_shapes"] for entry in per_image] == [
        {"indices": [10, 14]},
        {"indices": [4, 4]},
        {"indices": [2, 1]},
    ]
    assert metrics["psnr_db"] == pytest.approx(np.mean([e["psnr_db"] for e in per_image]))
    assert metrics["mse"] == pytest.approx(np.mean([e["mse"] for e in per_image]))
    # SSIM: the mean over the images of at least 11x11 pixels.
    assert per_image[2]["ssim"] is None
    assert metrics["ssim"] == pytest.approx(np.mean([e["ssim"] for e in per_image[:2]]))
    # The same figures as vqkeras reconstruct's.
    argv = ["reconstruct", "--model", vqvae_preset, "--input", tmp_path, "--out", tmp_path / "r"]
    code, summary = run(capsys, *argv)
    assert code == 0
    for key in ("mse", "psnr_db", "psnr_std_db", "ssim", "codebook_usage", "perplexity"):
        assert metrics[key] == pytest.approx(summary[key], rel=1e-6), key
    assert metrics["per_image"] == [
        {key: value for key, value in entry.items() if key != "file"}
        for entry in summary["per_image"]
    ]

    code, err = run(
        capsys, "evaluate", vqvae_preset, "--input", tmp_path, "--frechet-features", "x"
    )
    assert code == 2 and "--frechet-features needs images of one size" in err


def test_arrays_of_one_size_give_the_figures_of_evaluate_reconstructions(
    vqvae_preset, tmp_path, capsys
):
    images = blob_images(12)
    np.savez(tmp_path / "data.npz", images=images)
    code, metrics = run(capsys, "evaluate", vqvae_preset, "--input", tmp_path / "data.npz")
    assert code == 0 and "per_image" not in metrics
    expected = evaluate_reconstructions(from_preset(vqvae_preset), images)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_priors_and_classifiers_take_their_own_size_only(capsys):
    prior = ["evaluate", "pixelcnn_vqvae_mnist", "--input", "sample:cifar10", "--limit", "8"]
    code, err = run(capsys, *prior, "--samples-per-class", "0")
    last_line = err.splitlines()[-1]  # after the notice of the conversion to grayscale
    assert code == 2 and last_line.startswith("vqkeras: error: ")
    assert "Prior 'pixelcnn_vqvae_mnist' (over the codes of 'vqvae_mnist') takes 28x28" in last_line
    assert "image 0 of the input is 32x32. Pass --size 28x28 to resize" in last_line
    code, metrics = run(capsys, *prior, "--samples-per-class", "0", "--size", "28x28")
    assert code == 0 and metrics["grids"] == 8

    classifier = ["evaluate", "mnist_classifier", "--input", "sample:cifar10", "--limit", "8"]
    code, err = run(capsys, *classifier)
    assert code == 2 and "Classifier 'mnist_classifier' takes 28x28 images only" in err
    code, err = run(capsys, *classifier, "--size", "32x32")
    assert code == 2 and "Received --size 32x32" in err
    code, metrics = run(capsys, *classifier, "--size", "28x28")
    assert code == 0 and metrics["images"] == 8
