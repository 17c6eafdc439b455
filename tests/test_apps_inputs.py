import numpy as np
import pytest
from PIL import Image

from vqkeras import samples
from vqkeras.apps.inputs import ImageSet, load_images, model_image_shape


def write_png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    """b.png (gray 8x8), a.jpg (RGB 8x8), notes.txt, c.png (truncated), .hidden.png."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (8, 8), dtype="uint8")
    write_png(tmp_path / "b.png", gray)
    Image.fromarray(np.full((8, 8, 3), (200, 40, 10), "uint8")).save(tmp_path / "a.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    write_png(tmp_path / "full.png", rng.integers(0, 256, (32, 32, 3), dtype="uint8"))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "c.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "full.png").unlink()
    write_png(tmp_path / ".hidden.png", gray)
    return tmp_path


def test_folder_is_read_in_sorted_order_skipping_unreadable_files(folder, capsys):
    result = load_images(str(folder), channels=1, size=(8, 8), quiet=True)
    assert isinstance(result, ImageSet)
    assert result.names == [str(folder / "a.jpg"), str(folder / "b.png")]
    assert result.images.shape == (2, 8, 8, 1) and result.images.dtype == np.uint8
    assert result.labels is None
    assert sorted(item["path"] for item in result.skipped) == [
        str(folder / "c.png"),
        str(folder / "notes.txt"),
    ]
    err = capsys.readouterr().err
    assert err.count("vqkeras: warning: skipped") == 2 and "truncated" in err
    # The gray file is kept exactly; the RGB one is reduced to Pillow's luma.
    expected_gray = np.asarray(Image.open(folder / "b.png"))
    np.testing.assert_array_equal(result.images[1, ..., 0], expected_gray)
    expected_luma = np.asarray(Image.open(folder / "a.jpg").convert("L"))
    np.testing.assert_array_equal(result.images[0, ..., 0], expected_luma)
    assert "converted 1 image(s)" in err


def test_gray_becomes_rgb_and_sizes_are_resized_bilinear(tmp_path, capsys):
    gray = np.arange(64, dtype="uint8").reshape(8, 8) * 3
    path = write_png(tmp_path / "g.png", gray)
    result = load_images([path, path], channels=3, size=(4, 4), quiet=True)
    expected = np.asarray(Image.fromarray(gray).resize((4, 4), Image.Resampling.BILINEAR))
    assert result.images.shape == (2, 4, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(result.images[0, ..., channel], expected)
    err = capsys.readouterr().err
    assert "resized 2 image(s)" in err and "4x4" in err and "to RGB" in err


def test_strict_refuses_to_convert_or_resize(tmp_path):
    path = write_png(tmp_path / "rgb.png", np.zeros((8, 8, 3), "uint8"))
    with pytest.raises(ValueError, match=r"rgb.png' has 3 channel\(s\); the model expects 1"):
        load_images(path, channels=1, size=(8, 8), strict=True, quiet=True)
    with pytest.raises(ValueError, match=r"is 8x8 \(height x width\); the model expects 16x16"):
        load_images(path, channels=3, size=(16, 16), strict=True, quiet=True)
    assert load_images(path, channels=3, size=(8, 8), strict=True).images.shape == (1, 8, 8, 3)


def test_nothing_readable_and_missing_paths_are_clear_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"No readable image in .*: 1 file\(s\) skipped"):
        load_images(str(tmp_path), quiet=True)
    with pytest.raises(FileNotFoundError, match="'nowhere.png' does not exist"):
        load_images([str(tmp_path / "x.png"), "nowhere.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No files in"):
        load_images(str(tmp_path / "empty"))


def test_samples_npz_and_limits(tmp_path):
    images, labels = samples.load("mnist")
    result = load_images("sample:mnist", channels=1, size=(28, 28), limit=5)
    np.testing.assert_array_equal(result.images, images[:5])
    np.testing.assert_array_equal(result.labels, labels[:5])
    # Floats in [0, 1] become uint8; a labels/images length mismatch is refused.
    np.savez(tmp_path / "f.npz", images=np.full((3, 4, 4), 0.5, "float32"), labels=[1, 2, 3])
    result = load_images(str(tmp_path / "f.npz"))
    assert result.images.shape == (3, 4, 4, 1) and np.all(result.images == 128)
    np.testing.assert_array_equal(result.labels, [1, 2, 3])
    np.savez(tmp_path / "bad.npz", images=np.full((3, 4, 4), 2.0), labels=[1, 2])
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        load_images(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "range.npz", images=np.full((3, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]. Received dtype=float64"):
        load_images(str(tmp_path / "range.npz"))


def test_channels_first_arrays_are_transposed_with_a_notice(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 6), dtype="uint8")
    np.savez(tmp_path / "nchw.npz", images=images)
    result = load_images(str(tmp_path / "nchw.npz"))
    np.testing.assert_array_equal(result.images, np.transpose(images, (0, 2, 3, 1)))
    assert "holds channels-first images: read them as (2, 8, 6, 3)" in capsys.readouterr().err


def test_collections_stand_alone(tmp_path):
    path = write_png(tmp_path / "a.png", np.zeros((8, 8), "uint8"))
    with pytest.raises(ValueError, match="'sample:mnist' cannot be combined"):
        load_images([path, "sample:mnist"])


def test_tfds_input_reads_mocked_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        result = load_images("tfds:mnist:train", channels=1, size=(28, 28), limit=4, quiet=True)
    assert result.images.shape == (4, 28, 28, 1) and result.images.dtype == np.uint8
    assert result.labels.shape == (4,) and result.labels.max() < 10
    with pytest.raises(ValueError, match="Cannot load 'tfds:no_such_dataset_xyz'"):
        load_images("tfds:no_such_dataset_xyz")


class FakeModel:
    image_channels = 3

    def __init__(self, input_shape):
        self.input_shape = input_shape

    def get_build_config(self):
        return None if self.input_shape is None else {"input_shape": self.input_shape}


def test_model_image_shape_comes_from_the_build_config():
    assert model_image_shape(FakeModel([None, 16, 24, 3])) == (3, (16, 24))
    assert model_image_shape(FakeModel([None, None, None, 3])) == (3, None)
    assert model_image_shape(FakeModel(None)) == (3, None)


def test_own_size_keeps_each_image_as_it_is(tmp_path, capsys):
    rng = np.random.default_rng(0)
    small = write_png(tmp_path / "a.png", rng.integers(0, 256, (5, 7), dtype="uint8"))
    large = write_png(tmp_path / "b.png", rng.integers(0, 256, (37, 53, 3), dtype="uint8"))
    result = load_images([small, large], channels=3, quiet=True, own_size=True)
    assert isinstance(result.images, list)
    assert [image.shape for image in result.images] == [(5, 7, 3), (37, 53, 3)]
    np.testing.assert_array_equal(result.images[1], np.asarray(Image.open(large)))
    err = capsys.readouterr().err
    assert "converted 1 image(s)" in err and "resized" not in err
    # Arrays of one size come as a list of their images, unchanged.
    result = load_images("sample:mnist", channels=1, limit=3, own_size=True)
    assert len(result.images) == 3 and result.images[0].shape == (28, 28, 1)
    # A size resizes all of them into one array.
    result = load_images([small, large], channels=1, size=(4, 4), quiet=True, own_size=True)
    assert result.images.shape == (2, 4, 4, 1)


def test_a_command_of_one_size_refuses_other_sizes_with_a_hint(tmp_path):
    from types import SimpleNamespace

    from vqkeras.apps.inputs import load_images_of_size

    path = write_png(tmp_path / "a.png", np.zeros((9, 8), "uint8"))
    args = SimpleNamespace(
        input=[path], split="test", size=None, strict=False, limit=None, quiet=True
    )
    with pytest.raises(ValueError, match=r"Thing takes 8x8 images only .*'.*a.png' is 9x8\. "):
        load_images_of_size(args, 1, (8, 8), "Thing")
    args.size = (8, 9)
    with pytest.raises(ValueError, match=r"Thing takes 8x8 images only \(height x width\)\. Rec"):
        load_images_of_size(args, 1, (8, 8), "Thing")
    args.size = (8, 8)
    assert load_images_of_size(args, 1, (8, 8), "Thing").images.shape == (1, 8, 8, 1)
    args.input, args.size = [write_png(tmp_path / "b.png", np.zeros((8, 8), "uint8"))], None
    assert load_images_of_size(args, 1, (8, 8), "Thing").images.shape == (1, 8, 8, 1)
