import numpy as np
from PIL import Image

from vqkeras.apps.images import (
    GROUP_GAP,
    PADDING,
    code_palette,
    code_picture,
    image_grid,
    paired_rows,
    to_uint8,
    write_png,
)


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(
        to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255]
    )
    ints = np.array([1, 2], "uint8")
    assert to_uint8(ints) is ints


def test_image_grid_places_scaled_tiles_and_groups_rows():
    tiles = [np.full((32, 32, 1), value, "uint8") for value in (10, 20, 30)]
    rows = paired_rows(tiles, [255 - tile for tile in tiles], columns=2)
    assert [len(row) for row in rows] == [2, 2, 1, 1]
    grid = image_grid(rows, columns=2, rows_per_group=2)
    scale, step = 2, 64 + PADDING
    assert grid.shape == (4 * step + GROUP_GAP + PADDING, 2 * step + PADDING, 1)
    # Row 2 (the second group) starts one group gap further down.
    y = PADDING + 2 * step + GROUP_GAP
    assert np.all(grid[y : y + 32 * scale, PADDING : PADDING + 64] == 30)
    assert np.all(grid[PADDING + step : PADDING + step + 64, PADDING + step :][:, :64] == 235)
    # The missing tile of the last row is background.
    assert np.all(grid[y : y + 64, PADDING + step : PADDING + step + 64] == 255)


def test_gray_tiles_in_a_color_grid_and_code_pictures():
    codes = np.array([[0, 1], [2, 3]])
    picture = code_picture(codes, num_embeddings=4, size=(8, 8))
    palette = code_palette(4)
    assert picture.shape == (8, 8, 3)
    np.testing.assert_array_equal(picture[0, 0], palette[0])
    np.testing.assert_array_equal(picture[7, 7], palette[3])
    assert len({tuple(color) for color in palette}) == 4
    grid = image_grid([[np.full((8, 8, 1), 7, "uint8"), picture]], columns=2)
    assert grid.shape[-1] == 3 and np.all(grid[PADDING, PADDING] == 7)


def test_write_png_round_trips(tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, (5, 6, 1), dtype="uint8")
    write_png(tmp_path / "p.png", picture)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p.png")), picture[..., 0])


def test_thumbnails_fit_images_of_any_sizes_in_one_tile():
    from vqkeras.apps.images import BACKGROUND, thumbnails

    same = [np.zeros((8, 8, 1), "uint8")] * 2
    assert thumbnails(same)[0] is same[0]  # one small size: unchanged
    tiles = thumbnails([np.zeros((4, 6, 1), "uint8"), np.zeros((10, 2, 3), "uint8")])
    assert [tile.shape for tile in tiles] == [(10, 6, 3)] * 2
    # Centered on the background.
    assert np.all(tiles[0][3:7, :] == 0) and np.all(tiles[0][:3] == BACKGROUND)
    # Large images are shrunk to the tile, keeping their aspect ratio.
    (tile,) = thumbnails([np.zeros((300, 600, 3), "uint8")], max_side=128)
    assert tile.shape == (128, 128, 3)
    assert np.all(tile[32:96] == 0) and np.all(tile[:31] == BACKGROUND)
