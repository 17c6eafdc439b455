import csv
import json

import numpy as np
import pytest
from conftest import blob_images, small_vqvae
from PIL import Image
from test_vae import small_vae
from test_vqvae2 import small_vqvae2

from vqkeras.apps.cli import main
from vqkeras.apps.images import MIN_TILE_PIXELS, PADDING, to_uint8
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.presets import from_preset

OUTPUTS = ("reconstructions", "reconstructions.png", "metrics.csv", "summary.json")


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

    assert [entry["latent_shapes"] for entry in summary["per_image"]] == [{"indices": [4, 4]}] * 10
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == [
        "index",
        "label",
        "file",
        "height",
        "width",
        "latents",
        "mse",
        "psnr_db",
        "ssim",
    ]
    assert [int(row["index"]) for row in rows] == list(range(10))
    # Inputs without files are numbered.
    assert [row["file"] for row in rows] == [f"reconstructions/{i}.png" for i in range(10)]
    assert {(row["height"], row["width"], row["latents"]) for row in rows} == {
        ("16", "16", "indices:4x4")
    }
    first = np.asarray(Image.open(out / "reconstructions" / "0.png"))
    assert first.shape == (16, 16)
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
    assert "converted 1 image(s)" in captured.err and "resized" not in captured.err
    rows = read_csv(tmp_path / "out" / "metrics.csv")
    assert [row["name"] for row in rows] == [
        str(folder / n) for n in ("0.png", "1.png", "2_big.png")
    ]
    assert [(row["height"], row["width"]) for row in rows] == [("16", "16")] * 2 + [("20", "24")]

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
    # MNIST's 28x28 digits go through the 16x16 model at their own size.
    assert main([*argv, "--overwrite"]) == 0
    assert "resized" not in capsys.readouterr().err
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(row["height"], row["width"], row["latents"]) for row in rows] == [
        ("28", "28", "indices:7x7")
    ] * 2
    # The per-image folder is an output too.
    (tmp_path / "summary.json").unlink()
    assert main(argv) == 2
    assert "reconstructions already exists; pass --overwrite" in capsys.readouterr().err


def write_png(path, image):
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def smooth_image(height, width, seed=0):
    y, x = np.mgrid[:height, :width]
    phase = np.random.default_rng(seed).uniform(0, 6)
    return (128 + 80 * np.sin(x / 6.0 + phase) * np.cos(y / 9.0))[..., None].astype("uint8")


def test_images_of_mixed_sizes_are_reconstructed_at_their_own_sizes(vqvae_preset, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    sizes = {first / "photo.png": (37, 53), second / "photo.png": (16, 16)}
    sizes.update({second / "tiny.png": (3, 5), second / "Photo_1.png": (1, 1)})
    for path, size in sizes.items():
        write_png(path, smooth_image(*size))
    out = tmp_path / "out"
    argv = ["reconstruct", "--model", vqvae_preset, "--input", str(first), str(second)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # Folder order, then file order; stems kept unique by suffixes.
    names = [second / "Photo_1.png", second / "photo.png", second / "tiny.png"]
    names = [first / "photo.png", *names]
    files = ["photo.png", "Photo_1.png", "photo_2.png", "tiny.png"]
    per_image = summary["per_image"]
    assert [entry["name"] for entry in per_image] == [str(name) for name in names]
    assert [entry["file"] for entry in per_image] == [f"reconstructions/{f}" for f in files]
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == sorted(files)
    model = from_preset(vqvae_preset)
    for entry, name in zip(per_image, names):
        size = sizes[name]
        assert entry["size"] == list(size)
        assert entry["latent_shapes"] == {"indices": [-(-size[0] // 4), -(-size[1] // 4)]}
        written = np.asarray(Image.open(out / entry["file"]))
        assert written.shape == size
        # The PNG is the image's reconstruction, padded by reflection and cropped.
        padded = np.pad(smooth_image(*size), [(0, -s % 4) for s in size] + [(0, 0)], "reflect")
        expected = np.clip(model.predict(padded[None], verbose=0)[0, : size[0], : size[1]], 0, 1)
        assert np.max(np.abs(written.astype(int) - to_uint8(expected)[..., 0].astype(int))) <= 1
        mse = np.mean((expected - smooth_image(*size) / 255.0) ** 2)
        assert entry["psnr_db"] == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    # SSIM needs 11x11 pixels: none for the small ones, and the mean is of the others.
    assert [entry["ssim"] is None for entry in per_image] == [False, True, False, True]
    ssims = [entry["ssim"] for entry in per_image if entry["ssim"] is not None]
    assert summary["ssim"] == pytest.approx(np.mean(ssims))
    assert summary["psnr_db"] == pytest.approx(np.mean([e["psnr_db"] for e in per_image]))
    # Several grid shapes: usage and perplexity over all codes, the mean bits.
    assert "latent_grid" not in summary and 0 < summary["codebook_usage"] <= 1
    cells = [np.prod(entry["latent_shapes"]["indices"]) for entry in per_image]
    assert summary["bits_per_image"] == pytest.approx(np.mean(cells) * 4)
    rows = read_csv(out / "metrics.csv")
    assert [row["ssim"] for row in rows][1] == "" and rows[0]["latents"] == "indices:10x14"
    # The grid shows the images of several sizes in tiles of the largest.
    picture = np.asarray(Image.open(out / "reconstructions.png"))
    scale = MIN_TILE_PIXELS // 53 + 1
    assert picture.shape[1] == 8 * (53 * scale + PADDING) + PADDING


def test_size_resizes_every_image(vqvae_preset, tmp_path, capsys):
    write_png(tmp_path / "a.png", smooth_image(37, 53))
    argv = ["reconstruct", "--model", vqvae_preset, "--input", str(tmp_path / "a.png")]
    assert main([*argv, "--size", "8x12", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "resized 1 image(s)" in captured.err and "to 8x12 (bilinear)" in captured.err
    assert json.loads(captured.out)["per_image"][0]["latent_shapes"] == {"indices": [2, 3]}
    assert np.asarray(Image.open(tmp_path / "out" / "reconstructions" / "a.png")).shape == (8, 12)
    # --strict refuses to resize.
    strict = [*argv, "--size", "8x12", "--strict", "--out", str(tmp_path / "strict")]
    assert main(strict) == 2
    assert "is 37x53 (height x width); the model expects 8x12" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["32", "0x4", "4x", "axb", "2x-4", "32x32x3"])
def test_a_bad_size_is_refused_clearly(size, capsys):
    argv = ["reconstruct", "--model", "m", "--input", "x", "--out", "o", "--size", size]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert (
        f"argument --size: expected HEIGHTxWIDTH in pixels, such as 32x32; received {size!r}"
        in (capsys.readouterr().err)
    )
