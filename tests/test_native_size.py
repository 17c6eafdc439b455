import numpy as np
import pytest
from conftest import small_vqvae
from test_rqvae import small_rqvae
from test_vae import small_vae
from test_vqvae2 import small_vqvae2

from vqkeras import native_size, samples
from vqkeras.layers import ConvDecoder, ConvEncoder
from vqkeras.models import Autoencoder
from vqkeras.native_size import _windows
from vqkeras.presets import from_preset

# Tiled and untiled outputs come from the same arithmetic on inputs of other
# shapes, so the backends' convolutions may round them differently: on [0, 1]
# images, allow this much.
TILING_TOLERANCE = 1e-4


def built(model, channels=1):
    model.build((None, 16, 16, channels))
    return model


def random_images(sizes, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, channels), dtype="uint8") for size in sizes]


def smooth_image(height, width, channels=1):
    """A uint8 image with some structure: a few blurry stripes and a square."""
    y, x = np.mgrid[:height, :width]
    image = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0)
    image[height // 4 : height // 2, width // 3 : width // 2] = 230
    return np.repeat(image[..., None], channels, axis=-1).astype("uint8")


@pytest.fixture(scope="module")
def autoencoder():
    """A continuous model: no nearest-code search, so outputs are smooth in
    the inputs and tiling shows only as float rounding."""
    return built(
        Autoencoder(
            ConvEncoder(4, channels=(8, 16), num_residual_blocks=1),
            ConvDecoder(1, channels=(16, 8), num_residual_blocks=1),
        )
    )


@pytest.fixture(scope="module")
def vqvae():
    return built(small_vqvae())


def test_pad_image_reflects_at_the_bottom_and_right():
    image = np.arange(15, dtype="uint8").reshape(3, 5, 1)
    padded = native_size.pad_image(image, 4)
    assert padded.shape == (4, 8, 1)
    np.testing.assert_array_equal(padded[:3, :5], image)
    np.testing.assert_array_equal(padded[3, :5, 0], image[1, :, 0])  # row 2 mirrored about row 2
    np.testing.assert_array_equal(padded[0, 5:, 0], [3, 2, 1])
    assert native_size.pad_image(image[:1, :1], 4).shape == (4, 4, 1)
    assert np.all(native_size.pad_image(image[:1, :1], 4) == image[0, 0])
    same = np.zeros((8, 4, 3), "uint8")
    assert native_size.pad_image(same, 4) is same
    assert native_size.padded_size((37, 53), 8) == (40, 56)


@pytest.mark.parametrize("length", [8, 40, 1000, 1028, 2048, 2052, 3000])
def test_windows_cover_the_axis_with_the_margin_inside_the_image(length):
    tile_size, margin, factor = 256, 64, 4
    windows = _windows(length, tile_size, margin, factor)
    sizes = {stop - start for start, stop, _, _ in windows}
    assert len(sizes) == 1  # one window shape: one compiled function
    cores = [(core_start, core_stop) for _, _, core_start, core_stop in windows]
    assert cores[0][0] == 0 and cores[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    for start, stop, core_start, core_stop in windows:
        assert 0 <= start <= core_start < core_stop <= stop <= length
        assert start % factor == 0 and core_start % factor == 0
        # Context of at least `margin` pixels, or the image's own edge.
        assert core_start - start >= margin or start == 0
        assert stop - core_stop >= margin or stop == length
    if length <= tile_size + 2 * margin:
        assert windows == [(0, length, 0, length)]
    else:
        assert max(sizes) <= tile_size + 2 * margin


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (1, 1), (3, 7), (2, 40)])
def test_reconstruct_at_its_own_size_is_the_padded_image_cropped(autoencoder, size):
    (image,) = random_images([size])
    (reconstruction,) = native_size.reconstruct(autoencoder, [image])
    assert reconstruction.shape == image.shape and reconstruction.dtype == np.float32
    padded = native_size.pad_image(image, 4)
    expected = np.clip(autoencoder.predict(padded[None], verbose=0)[0], 0, 1)
    np.testing.assert_allclose(
        reconstruction, expected[: size[0], : size[1]], atol=TILING_TOLERANCE
    )


def test_mixed_sizes_keep_their_order_and_equal_sizes_are_batched(autoencoder):
    sizes = [(37, 53), (16, 16), (40, 56), (38, 54), (16, 16)]
    images = random_images(sizes)
    calls = []

    def progress(passes, total):
        calls.append(total)
        return passes

    reconstructions = native_size.reconstruct(autoencoder, images, progress=progress)
    assert [r.shape[:2] for r in reconstructions] == sizes
    # 37x53, 40x56 and 38x54 all pad to 40x56: one pass; the 16x16 pair another.
    assert calls == [2]
    alone = [native_size.reconstruct(autoencoder, [image])[0] for image in images]
    for together, single in zip(reconstructions, alone):
        np.testing.assert_allclose(together, single, atol=TILING_TOLERANCE)
    floats = native_size.reconstruct(autoencoder, [image / 255.0 for image in images])
    np.testing.assert_allclose(floats[0], reconstructions[0], atol=TILING_TOLERANCE)


def test_tiles_equal_the_whole_image_when_the_margin_covers_the_receptive_field(autoencoder):
    # The model's outputs depend on pixels at most about 23 away (8 through
    # the encoder, 15 through the decoder): a 32-pixel margin covers them.
    image = smooth_image(88, 120)
    (whole,) = native_size.reconstruct(autoencoder, [image], tile_size=4096)
    (tiled,) = native_size.reconstruct(autoencoder, [image], tile_size=16, margin=32)
    np.testing.assert_allclose(tiled, whole, atol=TILING_TOLERANCE)
    # Without a margin, tiles leave seams: the check can fail (the random
    # model's outputs stay near 0.5, so its seams are faint, but above 1e-3).
    (seamed,) = native_size.reconstruct(autoencoder, [image], tile_size=16, margin=0)
    assert np.max(np.abs(seamed - whole)) > 10 * TILING_TOLERANCE


def test_codes_round_trip_at_their_own_sizes(vqvae):
    images = random_images([(37, 53), (5, 3), (64, 72)])
    codes = native_size.encode_indices(vqvae, images)
    assert [c["indices"].shape for c in codes] == [(10, 14), (2, 1), (16, 18)]
    assert all(c["indices"].dtype == np.int32 for c in codes)
    sizes = [image.shape[:2] for image in images]
    decoded = native_size.decode_indices(vqvae, codes, sizes)
    reconstructions = native_size.reconstruct(vqvae, images)
    for a, b in zip(decoded, reconstructions):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=TILING_TOLERANCE)
    # Without sizes, an image is as large as its grid.
    assert native_size.decode_indices(vqvae, codes[:1])[0].shape == (40, 56, 1)

    # Tiled codes and decoding match the untiled ones.
    tiled = native_size.encode_indices(vqvae, images, tile_size=16, margin=32)
    for a, b in zip(tiled, codes):
        assert np.mean(a["indices"] == b["indices"]) >= 0.99
    tiled_images = native_size.decode_indices(vqvae, codes, sizes, tile_size=16, margin=32)
    for a, b in zip(tiled_images, decoded):
        np.testing.assert_allclose(a, b, atol=TILING_TOLERANCE)


def test_multi_grid_and_stacked_codes(tmp_path):
    vqvae2 = built(small_vqvae2())
    (image,) = random_images([(37, 53)])
    (codes,) = native_size.encode_indices(vqvae2, [image])
    assert codes["top"].shape == (5, 7) and codes["bottom"].shape == (10, 14)
    assert native_size.latent_shapes(vqvae2, (37, 53)) == {"top": (5, 7), "bottom": (10, 14)}
    (decoded,) = native_size.decode_indices(vqvae2, [codes], [(37, 53)], tile_size=8, margin=64)
    (reconstruction,) = native_size.reconstruct(vqvae2, [image])
    np.testing.assert_allclose(decoded, reconstruction, atol=TILING_TOLERANCE)

    rqvae = built(small_rqvae())
    (codes,) = native_size.encode_indices(rqvae, [image])
    assert codes["indices"].shape == (10, 14, rqvae.depth)
    assert native_size.latent_shapes(rqvae, (3, 3)) == {"indices": (1, 1, rqvae.depth)}
    assert native_size.latent_shapes(built(small_vae()), (37, 53)) == {"latents": (10, 14, 4)}


def test_the_default_margin_covers_the_zoo_models():
    images, _ = samples.load("cifar10")
    # A 96x160 mosaic of 3x5 CIFAR-10 test images.
    mosaic = images[:15].reshape(3, 5, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(96, 160, 3)
    for name in ("vqvae_cifar10", "vqvae2_cifar10"):
        model = from_preset(name)
        (whole,) = native_size.reconstruct(model, [mosaic], tile_size=4096)
        (tiled,) = native_size.reconstruct(model, [mosaic], tile_size=model.downsampling_factor)
        np.testing.assert_allclose(tiled, whole, atol=TILING_TOLERANCE, err_msg=name)


def test_bad_inputs_get_clear_errors(vqvae):
    (image,) = random_images([(8, 8)])
    with pytest.raises(ValueError, match=r"image 0 has shape \(8, 1\).*Pass a list of one"):
        native_size.reconstruct(vqvae, image)
    codes = native_size.encode_indices(vqvae, [image])
    with pytest.raises(ValueError, match="cover 8x8 pixels, which is not the padded size of 9x8"):
        native_size.decode_indices(vqvae, codes, [(9, 8)])
    with pytest.raises(ValueError, match="one size per image: 1 images, 2 sizes"):
        native_size.decode_indices(vqvae, codes, [(8, 8), (8, 8)])
    with pytest.raises(ValueError, match=r"expected the code grids \['indices'\]"):
        native_size.decode_indices(vqvae, [{"top": codes[0]["indices"]}])
    with pytest.raises(ValueError, match="has continuous latents"):
        native_size.encode_indices(built(small_vae()), [image])


def test_bad_tiling_arguments_are_refused(vqvae):
    (image,) = random_images([(8, 8)])
    for name, value in (("tile_size", 0), ("margin", -4), ("batch_size", 0)):
        with pytest.raises(ValueError, match=f"`{name}` must be a"):
            native_size.reconstruct(vqvae, [image], **{name: value})
