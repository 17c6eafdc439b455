"""The "ldm" architecture of the registry: its options, the layers it gives
each family, one training step of every kind of family with it, and
`vqkeras train --architecture ldm`."""

import json

import keras
import numpy as np
import pytest
from conftest import blob_images

import vqkeras
from vqkeras.apps.cli import main
from vqkeras.families import get_architecture
from vqkeras.layers import LDMDecoder, LDMEncoder, PatchDiscriminator
from vqkeras.models.factory import build_autoencoder

LDM = get_architecture("ldm")
# Tiny: 8 channels in 4 groups, two levels (one halving), one block per level.
TINY = {"channels": 8, "channel_multipliers": (1, 2), "num_res_blocks": 1, "groups": 4}


def test_options_defaults_and_what_the_architecture_builds():
    options = LDM.Options()
    assert (options.channels, options.channel_multipliers, options.num_res_blocks) == (
        128,
        (1, 2, 2, 4),
        2,
    )
    assert options.attention_levels is None and options.mid_block_attention
    assert options.groups == 32 and options.quant_conv and not options.double_z
    architecture = LDM(options)
    assert architecture.downsampling == 8 and architecture.width == 512
    encoder, decoder = architecture.encoder(8), architecture.decoder(3)
    assert isinstance(encoder, LDMEncoder) and isinstance(decoder, LDMDecoder)
    assert encoder.downsampling_factor == decoder.upsampling_factor == 8
    discriminator = architecture.discriminator()
    assert isinstance(discriminator, PatchDiscriminator)
    assert (discriminator.filters, discriminator.num_layers) == (64, 3)
    small = LDM(LDM.Options(**TINY, attention_levels=(1,), dropout=0.1))
    assert (small.discriminator().filters, small.discriminator().num_layers) == (8, 1)
    encoder = small.encoder(4)
    assert (encoder.attention_levels, encoder.dropout, encoder.groups) == ((1,), 0.1, 4)


def test_kl_families_get_diffusers_autoencoderkl_shapes():
    model = build_autoencoder("klvae", (8, 8, 3), architecture="ldm", latent_dim=3, **TINY)
    # Means and log-variances: conv_out and quant_conv to 2 x 3, post_quant_conv 3 -> 3.
    assert tuple(model.encoder.conv_out.kernel.shape) == (3, 3, 16, 6)
    assert tuple(model.encoder.quant_conv.kernel.shape) == (1, 1, 6, 6)
    assert tuple(model.decoder.post_quant_conv.kernel.shape) == (1, 1, 3, 3)
    # LDM's naming: z_channels = 3 doubled; the same shapes.
    named = build_autoencoder(
        "klvae", (8, 8, 3), architecture="ldm", latent_dim=3, double_z=True, z_channels=3, **TINY
    )
    assert [w.shape for w in named.weights] == [w.shape for w in model.weights]
    # taming's VQGAN: z_channels apart from the code width.
    vq = build_autoencoder(
        "vqvae", (8, 8, 3), architecture="ldm", latent_dim=2, z_channels=5, **TINY
    )
    assert tuple(vq.encoder.quant_conv.kernel.shape) == (1, 1, 5, 2)
    assert tuple(vq.decoder.post_quant_conv.kernel.shape) == (1, 1, 2, 5)


# The adversarial VQ family on every backend; the others dealt out over the
# backends' runs (each takes 10-30 s on JAX).
@pytest.mark.parametrize(
    "family, options",
    [
        ("vqgan", {"num_embeddings": 16}),
        pytest.param("vqvae", {"num_embeddings": 16}, marks=pytest.mark.slow),
        pytest.param("klvae", {}, marks=pytest.mark.slow),
        pytest.param("adversarial-klvae", {}, marks=pytest.mark.slow),
        pytest.param("fsq-vae", {"num_embeddings": 16}, marks=pytest.mark.slow),
        pytest.param("lfq-vae", {"num_embeddings": 16}, marks=pytest.mark.slow),
        pytest.param("vqvae2", {"num_embeddings": 16}, marks=pytest.mark.slow),
    ],
)
def test_every_kind_of_family_trains_a_step(family, options):
    model = build_autoencoder(family, (16, 16, 3), architecture="ldm", **TINY, **options)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype="uint8")
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][-1]) and np.isfinite(history["reconstruction_loss"][-1])
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert np.mean(changed) > 0.9  # the whole network learns, not only its ends
    assert tuple(model.predict(images[:1], verbose=0).shape) == (1, 16, 16, 3)


def test_vqvae2_stages_halve_once_more_at_the_last_levels_width():
    model = build_autoencoder("vqvae2", (16, 16, 3), architecture="ldm", num_embeddings=8, **TINY)
    assert isinstance(model.top_encoder, LDMEncoder) and model.top_encoder.channels == 16
    assert model.top_encoder.downsampling_factor == model.top_decoder.upsampling_factor == 2
    assert [grid.shape for grid in model.code_grids()] == [(4, 4), (8, 8)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"channels": 48}, "48 channels cannot be split into groups=32"),
        ({"channel_multipliers": ()}, r"channel_multipliers=\(\)"),
        ({"attention_levels": (4,)}, r"attention_levels=\(4,\)"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"z_channels": 0}, "z_channels=0"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        build_autoencoder("vqvae", (16, 16, 3), architecture="ldm", **options)


def test_one_level_has_no_discriminator_and_sizes_follow_the_levels():
    with pytest.raises(ValueError, match=r"at least two channel multipliers"):
        build_autoencoder(
            "vqgan", (8, 8, 1), architecture="ldm", **{**TINY, "channel_multipliers": (1,)}
        )
    with pytest.raises(ValueError, match="multiples of 4"):
        build_autoencoder("vqvae", (18, 18, 1), architecture="ldm", **{**TINY, "channel_multipliers": (1, 1, 2)})  # fmt: skip


@pytest.mark.slow
def test_train_command_trains_an_ldm_vqgan_and_writes_its_preset(tmp_path, capsys):
    data = tmp_path / "blobs.npz"
    np.savez(data, images=blob_images(12))
    out = tmp_path / "run"
    arguments = ["train", "--family", "vqgan", "--architecture", "ldm", "--data", str(data)]
    sizes = ["--channels", "32", "--channel-multipliers", "1,2", "--num-res-blocks", "1"]
    codes = ["--latent-dim", "4", "--num-embeddings", "16", "--attention-levels", "1"]
    run = ["--out", str(out), "--epochs", "1", "--batch-size", "8", "--quiet"]
    assert main([*arguments, *sizes, *codes, *run]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["validation"]["latent_grid"] == [8, 8]
    model = vqkeras.from_preset(out / "preset")
    assert isinstance(model.encoder, LDMEncoder) and model.encoder.attention_levels == (1,)
    assert model.encoder.channels == 32 and model.decoder.channel_multipliers == (1, 2)
    training = json.loads((out / "preset" / "metadata.json").read_text())["training"]
    assert training["architecture"] == "ldm" and training["channel_multipliers"] == [1, 2]
