import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder, ResidualBlock, SubPixelUpsampling


@pytest.mark.parametrize("channels, grid", [((8,), 16), ((8, 16), 8), ((8, 16, 16), 4)])
def test_encoder_decoder_shapes(channels, grid):
    encoder = ConvEncoder(5, channels=channels, num_residual_blocks=1)
    decoder = ConvDecoder(3, channels=channels[::-1], num_residual_blocks=2)
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    latents = encoder(images)
    assert tuple(latents.shape) == (2, grid, grid, 5)
    assert encoder.compute_output_shape((None, 32, 32, 3)) == (None, grid, grid, 5)
    assert encoder.downsampling_factor == decoder.upsampling_factor == 32 // grid
    assert tuple(decoder(latents).shape) == (2, 32, 32, 3)


def test_residual_block_is_identity_plus_branch():
    block = ResidualBlock(4)
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 6)).astype("float32")
    block.build(x.shape)
    for weight in block.conv1x1.weights:
        weight.assign(np.zeros(weight.shape))
    np.testing.assert_allclose(to_numpy(block(x)), x)


def test_sub_pixel_upsampling_places_channels_as_pixels():
    layer = SubPixelUpsampling(1)
    layer.build((1, 1, 1, 1))
    # A 2x2 kernel on a 1x1 input sees the pixel at its top-left tap only.
    kernel = np.zeros((2, 2, 1, 4), "float32")
    kernel[0, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    layer.conv.kernel.assign(kernel)
    out = to_numpy(layer(np.ones((1, 1, 1, 1), "float32")))
    np.testing.assert_allclose(out[0, :, :, 0], [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConvEncoder(0), "latent_dim=0"),
        (lambda: ConvEncoder(4, channels=()), r"channels=\(\)"),
        (lambda: ConvEncoder(4, channels=(8, -1)), "channels=-1"),
        (lambda: ConvDecoder(1, num_residual_blocks=-2), "num_residual_blocks=-2"),
        (lambda: ResidualBlock(0), "hidden_channels=0"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_config_round_trips():
    for layer in (ConvEncoder(4, (8, 16), 3, 5), ConvDecoder(3, (16, 8), 1)):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
