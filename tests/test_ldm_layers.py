"""The LDM/taming blocks and networks of `vqkeras.layers`: shapes, the blocks
against NumPy and against diffusers' PyTorch modules with the same weights,
the documented structure a converter walks, serialization, mixed precision
and refusals."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers import (
    AttentionBlock,
    Downsample,
    LDMDecoder,
    LDMEncoder,
    ResnetBlock,
    Upsample,
    attention_levels_for,
)

# Tiny networks: 16 channels in 8 groups keep each backend's run short.
TINY = {"channels": 16, "channel_multipliers": (1, 2), "num_res_blocks": 1, "groups": 8}


def random_features(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def randomize(layer, seed=0):
    """Random values in every weight, so that no zero bias or unit scale hides a
    misplaced weight."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.2, size=weight.shape).astype("float32"))


@pytest.mark.parametrize("size", [(16, 16), (24, 40), (8, 56)])
def test_encoder_and_decoder_take_any_multiple_of_the_factor(size):
    encoder = LDMEncoder(6, attention_levels=(1,), double_z=True, **TINY)
    decoder = LDMDecoder(3, attention_levels=(1,), **TINY)
    assert encoder.downsampling_factor == decoder.upsampling_factor == 2
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, *size, 3)).astype("float32")
    latents = encoder(images)
    grid = (2, size[0] // 2, size[1] // 2)
    assert tuple(latents.shape) == (*grid, 6)
    assert encoder.compute_output_shape((None, None, None, 3)) == (None, None, None, 6)
    assert encoder.compute_output_shape((None, *size, 3)) == (None, *grid[1:], 6)
    assert tuple(decoder(latents[..., :3]).shape) == (2, *size, 3)
    assert decoder.compute_output_shape((None, *grid[1:], 3)) == (None, *size, 3)


def test_three_levels_downsample_by_four():
    encoder = LDMEncoder(4, channels=8, channel_multipliers=(1, 1, 2), num_res_blocks=1, groups=4)
    decoder = LDMDecoder(1, channels=8, channel_multipliers=(1, 1, 2), num_res_blocks=1, groups=4)
    latents = encoder(np.zeros((1, 12, 20, 1), "float32"))
    assert tuple(latents.shape) == (1, 3, 5, 4)
    assert tuple(decoder(latents).shape) == (1, 12, 20, 1)


# --- The blocks against NumPy -------------------------------------------------


def numpy_group_norm(x, gamma, beta, groups, epsilon):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + epsilon)).reshape(x.shape) * gamma + beta


def test_attention_block_matches_numpy():
    block = AttentionBlock(groups=4)
    x = random_features((2, 3, 5, 8))
    block.build(x.shape)
    randomize(block)
    h = numpy_group_norm(x, to_numpy(block.norm.gamma), to_numpy(block.norm.beta), 4, 1e-6).reshape(
        2, 15, 8
    )
    q, k, v = (h @ to_numpy(d.kernel) + to_numpy(d.bias) for d in (block.q, block.k, block.v))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(8)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v) @ to_numpy(block.proj_out.kernel) + to_numpy(block.proj_out.bias)
    np.testing.assert_allclose(to_numpy(block(x)), x + out.reshape(x.shape), atol=1e-5)


def test_downsample_pads_bottom_and_right_only():
    layer = Downsample()
    layer.build((1, 4, 4, 1))
    # A kernel that reads only its bottom-right tap: output (i, j) is input
    # (2i + 2, 2j + 2), zero past the padded edge.
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[2, 2] = 1.0
    layer.conv.kernel.assign(kernel)
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_allclose(to_numpy(layer(x))[0, :, :, 0], [[10.0, 0.0], [0.0, 0.0]])
    assert layer.compute_output_shape((None, 24, 40, 5)) == (None, 12, 20, 5)


def test_upsample_repeats_nearest_pixels():
    layer = Upsample()
    layer.build((1, 2, 3, 1))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0  # identity
    layer.conv.kernel.assign(kernel)
    x = np.arange(6, dtype="float32").reshape(1, 2, 3, 1)
    expected = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(to_numpy(layer(x)), expected)


def test_resnet_block_shortcut_only_when_channels_change():
    same = ResnetBlock(8, groups=4)
    same.build((None, 4, 4, 8))
    assert same.conv_shortcut is None
    # With conv2 zeroed the block is its shortcut: the identity.
    for weight in same.conv2.weights:
        weight.assign(np.zeros(weight.shape))
    x = random_features((2, 4, 4, 8))
    np.testing.assert_allclose(to_numpy(same(x)), x)
    wider = ResnetBlock(16, groups=4)
    wider.build((None, 4, 4, 8))
    assert tuple(wider.conv_shortcut.kernel.shape) == (1, 1, 8, 16)


# --- The blocks against diffusers, weights copied -----------------------------


def torch_modules():
    pytest.importorskip("diffusers")
    import torch

    torch.manual_seed(0)
    return torch


def copy_conv(keras_conv, torch_conv):
    keras_conv.kernel.assign(torch_conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    keras_conv.bias.assign(torch_conv.bias.detach().numpy())


def copy_dense(keras_dense, torch_linear):
    keras_dense.kernel.assign(torch_linear.weight.detach().numpy().T)
    keras_dense.bias.assign(torch_linear.bias.detach().numpy())


def copy_norm(keras_norm, torch_norm):
    keras_norm.gamma.assign(torch_norm.weight.detach().numpy())
    keras_norm.beta.assign(torch_norm.bias.detach().numpy())


def randomize_torch(module, torch):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2)
    return module.eval()


def run_torch(module, x, torch):
    with torch.no_grad():
        out = module(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("in_channels, out_channels", [(16, 16), (16, 32)])
def test_resnet_block_matches_diffusers(in_channels, out_channels):
    torch = torch_modules()
    from diffusers.models.resnet import ResnetBlock2D

    reference = ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=None,
        groups=8,
        eps=1e-6,
    )
    randomize_torch(reference, torch)
    block = ResnetBlock(out_channels, groups=8)
    x = random_features((2, 6, 10, in_channels))
    block.build(x.shape)
    copy_norm(block.norm1, reference.norm1)
    copy_conv(block.conv1, reference.conv1)
    copy_norm(block.norm2, reference.norm2)
    copy_conv(block.conv2, reference.conv2)
    if in_channels != out_channels:
        copy_conv(block.conv_shortcut, reference.conv_shortcut)
    expected = run_torch(lambda t: reference(t, None), x, torch)
    np.testing.assert_allclose(to_numpy(block(x)), expected, atol=1e-4)


def test_attention_block_matches_diffusers():
    torch = torch_modules()
    from diffusers.models.attention_processor import Attention

    # As diffusers' VAE middle block builds it: one head over all channels.
    reference = Attention(
        16,
        heads=1,
        dim_head=16,
        eps=1e-6,
        norm_num_groups=8,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )
    randomize_torch(reference, torch)
    block = AttentionBlock(groups=8)
    x = random_features((2, 6, 10, 16))
    block.build(x.shape)
    copy_norm(block.norm, reference.group_norm)
    for dense, linear in zip(
        (block.q, block.k, block.v, block.proj_out),
        (reference.to_q, reference.to_k, reference.to_v, reference.to_out[0]),
    ):
        copy_dense(dense, linear)
    np.testing.assert_allclose(to_numpy(block(x)), run_torch(reference, x, torch), atol=1e-4)


@pytest.mark.parametrize("kind", ["down", "up"])
def test_resampling_matches_diffusers(kind):
    torch = torch_modules()
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    if kind == "down":
        reference = Downsample2D(16, use_conv=True, out_channels=16, padding=0, name="op")
        layer = Downsample()
    else:
        reference = Upsample2D(16, use_conv=True, out_channels=16)
        layer = Upsample()
    randomize_torch(reference, torch)
    x = random_features((2, 6, 10, 16))
    layer.build(x.shape)
    copy_conv(layer.conv, reference.conv)
    np.testing.assert_allclose(to_numpy(layer(x)), run_torch(reference, x, torch), atol=1e-4)


# --- Structure, options and refusals ------------------------------------------


def test_attention_levels_for_taming_resolutions():
    # taming's vqgan_imagenet_f16_1024: resolution 256, ch_mult (1, 1, 2, 2, 4), attn at 16.
    assert attention_levels_for((16,), 256, 5) == (4,)
    assert attention_levels_for((32, 16), 256, 5) == (3, 4)
    assert attention_levels_for((16,), 256, 4) == ()  # no level of that size: none, as taming


def test_structure_is_the_documented_one():
    encoder = LDMEncoder(4, attention_levels=(1,), **TINY)
    decoder = LDMDecoder(3, attention_levels=(0,), **TINY)
    encoder.build((None, 8, 8, 3))
    decoder.build((None, 4, 4, 4))
    assert len(encoder.down) == len(decoder.up) == 2
    assert [len(level.blocks) for level in encoder.down] == [1, 1]
    assert [len(level.blocks) for level in decoder.up] == [2, 2]
    assert [len(level.attentions) for level in encoder.down] == [0, 1]
    assert [len(level.attentions) for level in decoder.up] == [2, 0]
    assert encoder.down[0].downsample is not None and encoder.down[1].downsample is None
    assert decoder.up[0].upsample is None and decoder.up[1].upsample is not None
    # The first block of a level that changes channels has the shortcut.
    assert encoder.down[1].blocks[0].conv_shortcut is not None
    assert decoder.up[0].blocks[0].conv_shortcut is not None
    assert decoder.up[1].blocks[0].conv_shortcut is None
    paths = [w.path.split("/", 1)[1] for w in encoder.weights]
    assert paths[:4] == ["conv_in/kernel", "conv_in/bias", "down_0/block_0/norm1/gamma",
                         "down_0/block_0/norm1/beta"]  # fmt: skip
    assert paths[-6:] == ["norm_out/gamma", "norm_out/beta", "conv_out/kernel", "conv_out/bias",
                          "quant_conv/kernel", "quant_conv/bias"]  # fmt: skip
    assert "down_1/attention_0/q/kernel" in paths and "mid_attention/proj_out/bias" in paths
    paths = [w.path.split("/", 1)[1] for w in decoder.weights]
    assert paths[:3] == ["post_quant_conv/kernel", "post_quant_conv/bias", "conv_in/kernel"]
    assert paths.index("mid_block_2/conv2/bias") < paths.index("up_0/block_0/norm1/gamma")
    assert paths.index("up_0/attention_1/v/kernel") < paths.index("up_1/block_0/norm1/gamma")
    assert paths[-2:] == ["conv_out/kernel", "conv_out/bias"]


def test_z_channels_double_z_and_the_quant_convs():
    kl = LDMEncoder(8, double_z=True, **TINY)
    kl.build((None, 8, 8, 3))
    assert (kl.z_channels, kl.conv_out.filters, kl.quant_conv.filters) == (4, 8, 8)
    # taming's separate z_channels and embed_dim.
    vq = LDMEncoder(3, z_channels=6, **TINY)
    vq.build((None, 8, 8, 3))
    assert (vq.conv_out.filters, tuple(vq.quant_conv.kernel.shape)) == (6, (1, 1, 6, 3))
    bare = LDMEncoder(8, double_z=True, use_quant_conv=False, mid_block_attention=False, **TINY)
    bare.build((None, 8, 8, 3))
    assert bare.quant_conv is None and bare.mid_attention is None and bare.conv_out.filters == 8
    decoder = LDMDecoder(3, z_channels=6, **TINY)
    decoder.build((None, 4, 4, 3))
    assert tuple(decoder.post_quant_conv.kernel.shape) == (1, 1, 3, 6)
    assert tuple(decoder.conv_in.kernel.shape) == (3, 3, 6, 32)
    direct = LDMDecoder(3, use_post_quant_conv=False, **TINY)
    direct.build((None, 4, 4, 5))
    assert direct.post_quant_conv is None and tuple(direct.conv_in.kernel.shape) == (3, 3, 5, 32)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LDMEncoder(4, channels=48), r"48 channels cannot be split into groups=32"),
        (lambda: LDMEncoder(4, channels=32, channel_multipliers=()), r"channel_multipliers=\(\)"),
        (lambda: LDMDecoder(3, num_res_blocks=0), "num_res_blocks=0"),
        (
            lambda: LDMEncoder(4, channels=8, channel_multipliers=(2, 3), groups=16),
            r"24 channels cannot be split into groups=16",
        ),
        (lambda: LDMEncoder(4, attention_levels=(4,), **TINY), r"attention_levels=\(4,\)"),
        (lambda: LDMEncoder(5, double_z=True, **TINY), "latent_channels=5"),
        (
            lambda: LDMEncoder(4, z_channels=3, use_quant_conv=False, **TINY),
            "z_channels=3, double_z=False, latent_channels=4",
        ),
        (lambda: ResnetBlock(30, groups=32), "30 channels cannot be split"),
        (lambda: ResnetBlock(32, dropout=1.0), "dropout=1.0"),
        (lambda: AttentionBlock(groups=0), "groups=0"),
    ],
)
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (LDMEncoder(4, **TINY), (None, 9, 8, 3), "multiples of 2"),
        (LDMDecoder(3, z_channels=6, use_post_quant_conv=False, **TINY), (None, 4, 4, 4),
         "z_channels=6"),
        (ResnetBlock(16, groups=8), (None, 4, 4, 12), "12 channels cannot be split"),
        (AttentionBlock(groups=8), (None, 4, 4), r"\(B, H, W, C\)"),
    ],
)  # fmt: skip
def test_bad_input_shapes_are_refused(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer.build(shape)


# --- Serialization and mixed precision ----------------------------------------


def test_configs_round_trip():
    layers = [
        LDMEncoder(8, attention_levels=(0,), z_channels=4, double_z=True, dropout=0.1, **TINY),
        LDMDecoder(3, mid_block_attention=False, use_post_quant_conv=False, **TINY),
        ResnetBlock(32, dropout=0.2, groups=16, epsilon=1e-5),
        AttentionBlock(groups=4),
        Downsample(),
        Upsample(),
    ]
    for layer in layers:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_saved_model_gives_the_same_outputs(tmp_path):
    inputs = keras.Input((8, 12, 3))
    latents = LDMEncoder(4, attention_levels=(1,), **TINY)(inputs)
    model = keras.Model(inputs, LDMDecoder(3, attention_levels=(1,), **TINY)(latents))
    randomize(model)
    x = random_features((2, 8, 12, 3))
    path = tmp_path / "ldm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


def test_mixed_bfloat16_keeps_variables_and_statistics_in_float32():
    x = random_features((2, 8, 8, 3))
    full = LDMEncoder(4, attention_levels=(1,), **TINY)
    mixed = LDMEncoder(4, attention_levels=(1,), dtype="mixed_bfloat16", **TINY)
    full.build(x.shape)
    mixed.build(x.shape)
    randomize(full)
    for source, target in zip(full.weights, mixed.weights):
        target.assign(source)
    assert {w.dtype for w in mixed.weights} == {"float32"}
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    # bfloat16 keeps 8 bits of mantissa; float32 statistics and softmax keep
    # the result close to the float32 network's.
    expected = to_numpy(full(x))
    error = np.abs(to_numpy(keras.ops.cast(out, "float32")) - expected).max()
    assert error < 0.05 * np.abs(expected).max()
    block = mixed.down[1].attentions[0]
    assert block.norm.compute_dtype == "bfloat16" and block.norm.variable_dtype == "float32"
