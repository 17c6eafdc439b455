import json

import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy
from PIL import Image
from test_rqvae import small_rqvae
from test_vae import small_vae
from test_vqvae2 import small_vqvae2

from vqkeras.apps.cli import main
from vqkeras.apps.images import to_uint8
from vqkeras.presets import from_preset


def save_preset(model, path):
    model.build((None, 16, 16, 1))
    model.save_to_preset(path)
    return str(path)


@pytest.fixture(scope="module")
def vqvae_preset(tmp_path_factory):
    return save_preset(small_vqvae(), tmp_path_factory.mktemp("presets") / "vqvae")


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(blob_images(5)):
        Image.fromarray(image[..., 0]).save(folder / f"img{index}.png")
    return folder


def run(capsys, *argv):
    code = main([*map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_export_then_decode_reproduces_the_reconstructions(
    vqvae_preset, image_folder, tmp_path, capsys
):
    out = tmp_path / "latents" / "codes.npz"
    code, summary = run(
        capsys, "export-latents", "--model", vqvae_preset, "--input", image_folder, "--out", out
    )
    assert code == 0 and summary["codes"] == {"indices": [5, 4, 4]}
    model = from_preset(vqvae_preset)
    images = blob_images(5)
    names = [str(image_folder / f"img{index}.png") for index in range(5)]
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == ["indices", "model", "names", "sizes"]
        assert data["sizes"].tolist() == [[16, 16]] * 5
        assert data["indices"].dtype == np.int32
        np.testing.assert_array_equal(data["indices"], to_numpy(model.encode_indices(images)))
        assert data["names"].tolist() == names and str(data["model"]) == vqvae_preset
    # Beside the codes: each image next to its code grid, up to 8 rows.
    picture = np.asarray(Image.open(tmp_path / "latents" / "codes.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] < picture.shape[0]

    decoded = tmp_path / "decoded"
    code, summary = run(
        capsys, "export-latents", "--model", vqvae_preset, "--decode", out, "--out", decoded
    )
    assert code == 0 and summary["images"] == 5
    assert (decoded / "decoded.png").exists()
    assert sorted(p.name for p in (decoded / "images").iterdir()) == [
        f"img{index}.png" for index in range(5)
    ]
    with np.load(decoded / "images.npz", allow_pickle=False) as data:
        assert data["names"].tolist() == names
        expected = to_uint8(model.predict(images, verbose=0)).astype(int)
        assert np.max(np.abs(data["images"].astype(int) - expected)) <= 1


@pytest.mark.parametrize("format", ["npy", "jsonl"])
def test_other_formats_round_trip(format, vqvae_preset, tmp_path, capsys):
    out = tmp_path / f"codes.{format}"
    np.savez(tmp_path / "data.npz", images=blob_images(4), labels=[3, 1, 4, 1])
    argv = ["export-latents", "--model", vqvae_preset, "--input", tmp_path / "data.npz"]
    assert run(capsys, *argv, "--out", out)[0] == 0
    expected = to_numpy(from_preset(vqvae_preset).encode_indices(blob_images(4)))
    if format == "npy":
        np.testing.assert_array_equal(np.load(out), expected)
        metadata = json.loads((tmp_path / "codes.json").read_text())
        assert metadata["labels"] == [3, 1, 4, 1] and metadata["shape"] == [4, 4, 4]
        assert metadata["sizes"] == [[16, 16]] * 4
    else:
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["label"] for r in records] == [3, 1, 4, 1]
        assert [r["size"] for r in records] == [[16, 16]] * 4
        np.testing.assert_array_equal([r["indices"] for r in records], expected)
    code, _ = run(
        capsys, "export-latents", "--model", vqvae_preset, "--decode", out, "--out", tmp_path / "d"
    )
    assert code == 0
    with np.load(tmp_path / "d" / "images.npz") as data:
        assert data["images"].shape == (4, 16, 16, 1) and data["labels"].tolist() == [3, 1, 4, 1]


@pytest.mark.parametrize("family", ["vqvae2", "rqvae"])
def test_multi_grid_models(family, tmp_path, capsys):
    model = small_vqvae2() if family == "vqvae2" else small_rqvae()
    preset = save_preset(model, tmp_path / family)
    np.savez(tmp_path / "data.npz", images=blob_images(3))
    argv = ["export-latents", "--model", preset, "--input", tmp_path / "data.npz"]
    code, summary = run(capsys, *argv, "--out", tmp_path / "codes.npz")
    expected = (
        {"top": [3, 2, 2], "bottom": [3, 4, 4]} if family == "vqvae2" else {"indices": [3, 4, 4, 3]}
    )
    assert code == 0 and summary["codes"] == expected
    code, _ = run(
        capsys,
        "export-latents",
        "--model",
        preset,
        "--decode",
        tmp_path / "codes.npz",
        "--out",
        tmp_path / "decoded",
    )
    assert code == 0
    with np.load(tmp_path / "decoded" / "images.npz") as data:
        expected_images = to_uint8(from_preset(preset).predict(blob_images(3), verbose=0))
        assert np.max(np.abs(data["images"].astype(int) - expected_images.astype(int))) <= 1
    if family == "vqvae2":
        code, err = run(capsys, *argv, "--out", tmp_path / "npy" / "codes.npy")
        assert code == 2 and "--format npy holds one array" in err and "'bottom', 'top'" in err


def test_codes_that_do_not_fit_get_clear_errors(vqvae_preset, tmp_path, capsys):
    decode = ["export-latents", "--model", vqvae_preset, "--out", tmp_path / "out", "--decode"]
    np.savez(tmp_path / "range.npz", indices=np.full((2, 4, 4), 16, "int32"))
    code, err = run(capsys, *decode, tmp_path / "range.npz")
    assert code == 2 and r"in [0, 16). Received values in [16, 16]" in err
    np.savez(tmp_path / "shape.npz", indices=np.zeros((2, 4, 4, 2), "int32"))
    code, err = run(capsys, *decode, tmp_path / "shape.npz")
    assert code == 2 and "decodes indices code grids of shape (height, width) per image" in err
    assert "image 0 has shape (4, 4, 2)" in err
    np.savez(tmp_path / "sizes.npz", indices=np.zeros((2, 4, 4), "int32"), sizes=[[16, 16]] * 3)
    code, err = run(capsys, *decode, tmp_path / "sizes.npz")
    assert code == 2 and "holds arrays of different lengths: {'codes': 2, 'sizes': 3}" in err
    np.savez(tmp_path / "big.npz", indices=np.zeros((1, 4, 4), "int32"), sizes=[[17, 16]])
    code, err = run(capsys, *decode, tmp_path / "big.npz")
    assert code == 2 and "cover 16x16 pixels, which is not the padded size of 17x16" in err
    np.savez(tmp_path / "float.npz", indices=np.zeros((2, 4, 4), "float32"))
    code, err = run(capsys, *decode, tmp_path / "float.npz")
    assert code == 2 and "Expected integer indices codes" in err
    np.savez(tmp_path / "other.npz", top=np.zeros((2, 2, 2), "int32"))
    code, err = run(capsys, *decode, tmp_path / "other.npz")
    assert code == 2 and "has the code grids ['indices']; image 0 has ['top']" in err
    code, err = run(capsys, *decode, tmp_path / "missing.npz")
    assert code == 2 and "missing.npz' does not exist" in err
    (tmp_path / "digit.png").write_bytes(b"an image, not codes")
    code, err = run(capsys, *decode, tmp_path / "digit.png")
    assert code == 2 and "format of --decode" in err and "(a file of codes)" in err


def test_models_without_codes_are_refused(tmp_path, capsys):
    preset = save_preset(small_vae(), tmp_path / "vae")
    code, err = run(
        capsys,
        "export-latents",
        "--model",
        preset,
        "--input",
        "sample:mnist",
        "--out",
        tmp_path / "codes.npz",
    )
    assert code == 2 and "is a VAE, which has no discrete codes" in err
    assert not (tmp_path / "codes.npz").exists()


def test_existing_codes_are_kept_without_overwrite(vqvae_preset, tmp_path, capsys):
    (tmp_path / "codes.png").write_bytes(b"mine")
    argv = ["export-latents", "--model", vqvae_preset, "--input", "sample:mnist", "--limit", "2"]
    code, err = run(capsys, *argv, "--out", tmp_path / "codes.npz")
    assert code == 2 and "codes.png already exists; pass --overwrite" in err
    assert not (tmp_path / "codes.npz").exists()
    assert run(capsys, *argv, "--out", tmp_path / "codes.npz", "--overwrite")[0] == 0


@pytest.fixture
def mixed_folders(tmp_path):
    """Images of several sizes in two folders, one stem in both."""
    sizes = {"a/photo.png": (37, 53), "b/photo.png": (16, 16), "b/tiny.png": (3, 5)}
    rng = np.random.default_rng(0)
    for name, size in sizes.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size, dtype="uint8")).save(tmp_path / name)
    return [tmp_path / "a", tmp_path / "b"], list(sizes.values())


@pytest.mark.parametrize("format", ["npz", "jsonl"])
def test_grids_of_several_shapes_round_trip(format, vqvae_preset, mixed_folders, tmp_path, capsys):
    folders, sizes = mixed_folders
    out = tmp_path / f"codes.{format}"
    export = ["export-latents", "--model", vqvae_preset, "--input", *folders]
    code, summary = run(capsys, *export, "--out", out)
    assert code == 0 and summary["codes"] == {"indices": [3, None, None]}
    grids = [(-(-h // 4), -(-w // 4)) for h, w in sizes]
    if format == "npz":
        with np.load(out, allow_pickle=False) as data:
            assert sorted(data.files) == [
                "indices_0",
                "indices_1",
                "indices_2",
                "model",
                "names",
            ] + ["sizes"]
            assert [data[f"indices_{i}"].shape for i in range(3)] == grids
            assert data["sizes"].tolist() == [list(size) for size in sizes]
    else:
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [np.shape(r["indices"]) for r in records] == grids
        assert [r["size"] for r in records] == [list(size) for size in sizes]

    decoded = tmp_path / "decoded"
    decode = ["export-latents", "--model", vqvae_preset, "--decode", out, "--out", decoded]
    assert run(capsys, *decode)[0] == 0
    # The same images as vqkeras reconstruct writes, at their own sizes.
    reconstruct = ["reconstruct", "--model", vqvae_preset, "--input", *folders]
    assert run(capsys, *reconstruct, "--out", tmp_path / "rec")[0] == 0
    files = ["photo.png", "photo_1.png", "tiny.png"]
    with np.load(decoded / "images.npz", allow_pickle=False) as data:
        assert [data[f"images_{i}"].shape for i in range(3)] == [(*s, 1) for s in sizes]
        for index, (file, size) in enumerate(zip(files, sizes)):
            image = np.asarray(Image.open(decoded / "images" / file))
            expected = np.asarray(Image.open(tmp_path / "rec" / "reconstructions" / file))
            assert image.shape == size
            np.testing.assert_array_equal(image, data[f"images_{index}"][..., 0])
            assert np.max(np.abs(image.astype(int) - expected.astype(int))) <= 1


def test_npy_holds_one_grid_shape_only(vqvae_preset, mixed_folders, tmp_path, capsys):
    folders, _ = mixed_folders
    argv = ["export-latents", "--model", vqvae_preset, "--input", *folders]
    code, err = run(capsys, *argv, "--out", tmp_path / "codes.npy")
    assert code == 2 and "code grids of several shapes" in err and "use npz or jsonl" in err
    code, summary = run(capsys, *argv, "--size", "16x16", "--out", tmp_path / "codes.npy")
    assert code == 0 and summary["codes"] == {"indices": [3, 4, 4]}
