"""Pictures the apps write: PNG grids of images and of code grids, made with
Pillow (no display needed)."""

import io

import numpy as np
from PIL import Image

from vqkeras.file_io import write_atomic

# Small images (MNIST's 28 px) are enlarged, by an integer factor, to at least
# this many pixels, so that a grid is readable at its natural size.
MIN_TILE_PIXELS = 64
PADDING = 2
GROUP_GAP = 6
BACKGROUND = 255
# Larger images are shrunk to at most this many pixels a side in a grid.
THUMBNAIL_PIXELS = 128


def to_uint8(images):
    """uint8 images from uint8 or from floats on [0, 1] (clipped, rounded)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype("uint8")


def image_grid(rows, columns, rows_per_group=1):
    """One uint8 `(height, width, channels)` picture of `rows` of tiles.

    Args:
        rows: lists of uint8 tiles `(h, w, 1 or 3)`, all of one size, at most
            `columns` per row (shorter rows are padded with background).
        columns: tiles per row.
        rows_per_group: rows that belong together (e.g. 2 for inputs over
            reconstructions); groups are set further apart.
    """
    tiles = [tile for row in rows for tile in row]
    channels = max(tile.shape[-1] for tile in tiles)
    height, width = tiles[0].shape[:2]
    scale = max(1, -(-MIN_TILE_PIXELS // max(height, width)))
    step_y, step_x = height * scale + PADDING, width * scale + PADDING
    gap = GROUP_GAP if rows_per_group > 1 else 0
    groups = -(-len(rows) // rows_per_group)
    grid = np.full(
        (
            len(rows) * step_y + (groups - 1) * gap + PADDING,
            columns * step_x + PADDING,
            channels,
        ),
        BACKGROUND,
        "uint8",
    )
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
            y = PADDING + r * step_y + (r // rows_per_group) * gap
            x = PADDING + c * step_x
            # Broadcasting repeats a gray tile over the channels of a color grid.
            grid[y : y + height * scale, x : x + width * scale] = tile
    return grid


def thumbnails(images, max_side=THUMBNAIL_PIXELS):
    """uint8 tiles of one size for `image_grid`, from images of any sizes.

    The tile is as tall and as wide as the largest image, at most `max_side`
    pixels. An image that does not fit is shrunk (bilinear, keeping its
    aspect ratio); each is centered on the background. Images of one size
    no larger than `max_side` are returned as they are.
    """
    height = min(max_side, max(image.shape[0] for image in images))
    width = min(max_side, max(image.shape[1] for image in images))
    channels = max(image.shape[-1] for image in images)
    if all(image.shape == (height, width, channels) for image in images):
        return list(images)
    tiles = []
    for image in images:
        scale = min(1.0, height / image.shape[0], width / image.shape[1])
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            shrunk = np.asarray(picture.resize(size, Image.Resampling.BILINEAR))
            image = shrunk.reshape(size[1], size[0], image.shape[-1])
        tile = np.full((height, width, channels), BACKGROUND, "uint8")
        top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
        tile[top : top + image.shape[0], left : left + image.shape[1]] = image
        tiles.append(tile)
    return tiles


def paired_rows(top, bottom, columns):
    """Rows for `image_grid`: `columns` images of `top` over the same ones of
    `bottom` (e.g. inputs over their reconstructions), and so on."""
    rows = []
    for start in range(0, len(top), columns):
        rows += [list(top[start : start + columns]), list(bottom[start : start + columns])]
    return rows


def code_palette(num_embeddings):
    """A fixed color per code, `(num_embeddings, 3)` uint8: random (seeded)
    rather than a color map, so that neighbouring codes look different."""
    return np.random.default_rng(0).integers(0, 256, size=(num_embeddings, 3), dtype="uint8")


def code_picture(grid, num_embeddings, size):
    """An int code grid `(h, w)` as an RGB picture `(height, width, 3)`: each
    code as its palette color, each grid cell a block of pixels."""
    colors = code_palette(num_embeddings)[np.asarray(grid)]
    picture = Image.fromarray(colors, "RGB").resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(picture)


def write_png(path, picture, overwrite=False):
    """Writes a uint8 `(height, width, 1 or 3)` picture as PNG, atomically."""
    picture = picture[..., 0] if picture.shape[-1] == 1 else picture
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    write_atomic(path, lambda f: f.write(buffer.getvalue()), overwrite=overwrite, mode="wb")
