import pytest

from vqkeras.apps.outputs import image_file_names, output_paths


def test_image_file_names_are_stems_kept_unique():
    names = ["a/photo.jpg", "b/photo.png", "b/Photo_1.png", "c/.png", "../../etc/passwd"]
    assert image_file_names(names, len(names)) == [
        "photo.png",
        "photo_1.png",
        "Photo_1_1.png",
        ".png.png",
        "passwd.png",
    ]
    assert image_file_names(None, 3) == ["0.png", "1.png", "2.png"]
    assert image_file_names(None, 11)[:2] == ["00.png", "01.png"]


def test_existing_outputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileExistsError, match="images already exists; pass --overwrite"):
        output_paths(tmp_path, ("summary.json", "images"), overwrite=False)
    paths = output_paths(tmp_path, ("summary.json", "images"), overwrite=True)
    assert paths["images"] == str(tmp_path / "images")
