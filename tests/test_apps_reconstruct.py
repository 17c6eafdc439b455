import csv
import json

import numpy as np
import pytest
from conftest import blob_images, small_vqvae
from PIL import Image
from test_vae import small_vae
from test_vqvae2 import small_vqvae2

from vqkeras.apps.cli import main
from vqkeras.apps.images import MIN_TILE_PIXELS, PADDING
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.presets import from_preset

OUTPUTS = ("reconstructions.png", "metrics.csv", "summary.json")


def save_preset(model, path, channels=1):
    model.build((None, 16, 16, channels))
    model.save_to_preset(path)
    return str(path)


@pytest.fixture(scope="module")
def vqvae_preset(tmp_path_factory):
    return save_preset(small_vqvae(), tmp_path_factory.mktemp("presets") / "vqvae")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_reconstruct_writes_picture_metrics_and_summary(vqvae_preset, tmp_path, capsys):
    images = blob_images(10)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    out = tmp_path / "out"
    args = ["reconstruct", "--model", vqvae_preset, "--input", str(tmp_path / "data.npz")]
    assert main([*args, "--out", str(out), "--batch-size", "4", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)

    summary = json.loads((out / "summary.json").read_text())
    assert summary == printed
    assert summary["images"] == 10 and summary["skipped"] == 0
    expected = evaluate_reconstructions(from_preset(vqvae_preset), images)
    for key in ("mse", "psnr_db", "psnr_std_db", "ssim", "codebook_usage", "perplexity"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
    assert summary["latent_grid"] == [4, 4] and summary["bits_per_image"] == 64.0

    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["index", "label", "mse", "psnr_db", "ssim"]
    assert [int(row["index"]) for row in rows] == list(range(10))
    assert [int(row["label"]) for row in rows] == labels.tolist()
    psnr = np.array([float(row["psnr_db"]) for row in rows])
    assert psnr.mean() == pytest.approx(expected["psnr_db"], rel=1e-4)
    assert np.mean([float(row["ssim"]) for row in rows]) == pytest.approx(
        expected["ssim"], abs=1e-5
    )

    # 8 columns; two pairs of rows (inputs over reconstructions) for 10 images.
    picture = np.asarray(Image.open(out / "reconstructions.png"))
    scale = MIN_TILE_PIXELS // 16
    step = 16 * scale + PADDING
    assert picture.shape[1] == 8 * step + PADDING and picture.shape[0] > 4 * step
    first_tile = picture[PADDING : PADDING + 16 * scale, PADDING : PADDING + 16 * scale]
    np.testing.assert_array_equal(first_tile, np.kron(images[0, ..., 0], np.ones((scale, scale))))


@pytest.mark.parametrize("family", [pytest.param("vqvae2", marks=pytest.mark.slow), "vae"])
def test_every_family_reconstructs(family, tmp_path, capsys):
    model = small_vqvae2() if family == "vqvae2" else small_vae()
    preset = save_preset(model, tmp_path / family)
    images = blob_images(6)
    np.savez(tmp_path / "data.npz", images=images)
    argv = ["reconstruct", "--model", preset, "--input", str(tmp_path / "data.npz")]
    assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    loaded = from_preset(preset)
    reconstructions = np.clip(loaded.predict(images, verbose=0), 0, 1)
    mse = np.mean((reconstructions - images / 255.0) ** 2, axis=(1, 2, 3))
    assert summary["psnr_db"] == pytest.approx(np.mean(-10 * np.log10(mse)), rel=1e-4)
    if family == "vqvae2":
        assert summary["top_latent_grid"] == [2, 2] and summary["bottom_latent_grid"] == [4, 4]
        assert 0 < summary["top_codebook_usage"] <= 1 and summary["bottom_perplexity"] >= 1
        assert summary["bits_per_image"] == 20 * 4.0
    else:
        assert "codebook_usage" not in summary and "perplexity" not in summary


def test_bad_files_are_skipped_and_the_good_ones_processed(vqvae_preset, tmp_path, capsys):
    images = blob_images(3)
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(images[:2]):
        Image.fromarray(image[..., 0]).save(folder / f"{index}.png")
    Image.fromarray(np.zeros((20, 24, 3), "uint8")).save(folder / "2_big.png")
    (folder / "3_notes.txt").write_text("hello")
    png = (folder / "0.png").read_bytes()
    (folder / "4_truncated.png").write_bytes(png[: len(png) // 2])

    argv = ["reconstruct", "--model", vqvae_preset, "--input", str(folder), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["images"] == 3 and summary["skipped"] == 2
    assert [item["path"] for item in summary["skipped_files"]] == [
        str(folder / "3_notes.txt"),
        str(folder / "4_truncated.png"),
    ]
    assert captured.err.count("vqkeras: warning: skipped") == 2
    assert "resized 1 image(s)" in captured.err and "converted 1 image(s)" in captured.err
    rows = read_csv(tmp_path / "out" / "metrics.csv")
    assert [row["name"] for row in rows] == [
        str(folder / n) for n in ("0.png", "1.png", "2_big.png")
    ]

    assert main([*argv, "--out", str(tmp_path / "strict"), "--strict"]) == 2
    # The warnings about the skipped files come first; the error is the last line.
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("vqkeras: error: ")
    assert "2_big.png' has 3 channel(s); the model expects 1 channel(s)" in last_line


def test_outputs_are_never_replaced_without_overwrite(vqvae_preset, tmp_path, capsys):
    argv = ["reconstruct", "--model", vqvae_preset, "--input", "sample:mnist", "--limit", "2"]
    argv += ["--out", str(tmp_path), "--quiet"]
    (tmp_path / "metrics.csv").write_text("mine")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "metrics.csv already exists; pass --overwrite" in err and err.count("\n") == 1
    assert (tmp_path / "metrics.csv").read_text() == "mine"
    assert not (tmp_path / "summary.json").exists()
    # MNIST's 28x28 digits are resized to the model's 16x16.
    assert main([*argv, "--overwrite"]) == 0
    assert "resized 2 image(s) of sample:mnist to 16x16" in capsys.readouterr().err
    assert len(read_csv(tmp_path / "metrics.csv")) == 2
