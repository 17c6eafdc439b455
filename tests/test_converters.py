"""Converted diffusers, latent-diffusion and taming autoencoders against their
sources: small random-weight models run by diffusers in PyTorch (CPU,
float32), compared within 1e-4 on encoding and decoding, on each Keras
backend. No network: every source is made here."""

import json

import keras
import numpy as np
import pytest

from vqkeras.apps.cli import main
from vqkeras.checkpoints import read_state_dict
from vqkeras.converters import convert_checkpoint, model_from_checkpoint
from vqkeras.models import KLVAE, VQVAE
from vqkeras.models.factory import build_autoencoder
from vqkeras.presets import from_preset, load_metadata, sha256_of
from vqkeras.training import load_initial_weights

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")

# float32 on both sides; the largest differences seen are about 1e-5.
TOLERANCE = 1e-4


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def nchw(images):
    """[0, 1] NHWC images as diffusers' [-1, 1] NCHW input."""
    return torch.from_numpy(images * 2 - 1).permute(0, 3, 1, 2)


def nhwc(tensor):
    return tensor.detach().permute(0, 2, 3, 1).numpy()


def perturbed(model, seed=0):
    """`model` with every parameter moved off its initial value, so that
    swapped norms or biases (initialised to 1 and 0) are caught."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.1 * noise)
    return model.eval()


@pytest.fixture
def images():
    # A non-square size, a multiple of the models' downsampling of 2.
    return np.random.default_rng(0).uniform(size=(2, 16, 24, 3)).astype("float32")


def diffusers_kl():
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.3,
        shift_factor=0.1,
    )
    return perturbed(model)


def diffusers_vq():
    torch.manual_seed(0)
    model = diffusers.VQModel(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=3,
        vq_embed_dim=5,
        num_vq_embeddings=16,
        norm_num_groups=8,
        sample_size=16,
    )
    return perturbed(model)


def assert_same_kl(model, reference, images):
    assert isinstance(model, KLVAE)
    with torch.no_grad():
        posterior = reference.encode(nchw(images)).latent_dist
        decoded = nhwc(reference.decode(posterior.mean).sample)
    ours = model.encode(images)
    np.testing.assert_allclose(to_numpy(ours.mean), nhwc(posterior.mean), atol=TOLERANCE)
    np.testing.assert_allclose(to_numpy(ours.logvar), nhwc(posterior.logvar), atol=TOLERANCE)
    ours_decoded = to_numpy(model.decode(nhwc(posterior.mean))) * 2 - 1
    np.testing.assert_allclose(ours_decoded, decoded, atol=TOLERANCE)


def assert_same_vq(model, reference, images):
    assert isinstance(model, VQVAE)
    with torch.no_grad():
        latents = reference.encode(nchw(images)).latents
        _, _, (_, _, indices) = reference.quantize(latents)
        decoded = nhwc(reference.decode(latents).sample)
    ours_latents = to_numpy(model.encoder(model.encoder_inputs(images)))
    np.testing.assert_allclose(ours_latents, nhwc(latents), atol=TOLERANCE)
    ours_indices = to_numpy(model.encode_indices(images))
    np.testing.assert_array_equal(ours_indices.reshape(-1), indices.numpy().reshape(-1))
    ours_decoded = to_numpy(model.decode_indices(ours_indices)) * 2 - 1
    np.testing.assert_allclose(ours_decoded, decoded, atol=TOLERANCE)


def test_diffusers_autoencoder_kl_folder(tmp_path, images):
    reference = diffusers_kl()
    reference.save_pretrained(tmp_path / "kl")
    summary = convert_checkpoint(tmp_path / "kl", tmp_path / "preset")
    assert summary["format"] == "diffusers" and summary["kind"] == "kl"
    assert summary["scaling_factor"] == 0.3 and summary["shift_factor"] == 0.1
    assert summary["notes"] == []

    model = from_preset(tmp_path / "preset")
    assert model.scaling_factor == pytest.approx(0.3) and model.shift_factor == pytest.approx(0.1)
    assert_same_kl(model, reference, images)
    metadata = load_metadata(tmp_path / "preset")
    weights = tmp_path / "kl" / "diffusion_pytorch_model.safetensors"
    assert metadata["converted_from"]["files"] == [
        {"name": weights.name, "sha256": sha256_of(weights)}
    ]
    assert metadata["converted_from"]["config"]["_class_name"] == "AutoencoderKL"


def test_diffusers_vq_model_folder_of_bin_weights_with_attention_levels(tmp_path, images):
    reference = diffusers_vq()
    reference.save_pretrained(tmp_path / "vq", safe_serialization=False)
    summary = convert_checkpoint(tmp_path / "vq", tmp_path / "preset")
    assert summary["kind"] == "vq" and summary["options"]["attention_levels"] == [1]
    assert summary["options"]["num_embeddings"] == 16 and summary["options"]["latent_dim"] == 5
    assert_same_vq(from_preset(tmp_path / "preset"), reference, images)


def test_a_pipeline_folder_is_read_from_its_vae(tmp_path, images):
    reference = diffusers_kl()
    reference.save_pretrained(tmp_path / "pipeline" / "vae")
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    model, checkpoint = model_from_checkpoint(tmp_path / "pipeline")
    assert checkpoint.source.endswith("vae")
    assert_same_kl(model, reference, images)


# --- LDM / taming single files ------------------------------------------------


def ldm_state_dict(
    *, attention_levels=(), z_channels=4, double_z=True, embed_dim=4, num_embeddings=None
):
    """Random tensors in latent diffusion's / taming's names and shapes: 32
    base channels, levels of 32 and 64, one ResNet block per level (the
    decoder two), 32 groups. Built from taming's layout, independently of
    vqkeras's converter."""
    generator = torch.Generator().manual_seed(1)
    tensors = {}

    def conv(name, cin, cout, size):
        weight = torch.randn(cout, cin, size, size, generator=generator)
        tensors[f"{name}.weight"] = weight / (cin * size * size) ** 0.5
        tensors[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=generator)

    def norm(name, channels):
        tensors[f"{name}.weight"] = 1 + 0.1 * torch.randn(channels, generator=generator)
        tensors[f"{name}.bias"] = 0.1 * torch.randn(channels, generator=generator)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attention(name, channels):
        norm(f"{name}.norm", channels)
        for projection in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{projection}", channels, channels, 1)

    def middle(name, channels):
        resnet(f"{name}.mid.block_1", channels, channels)
        attention(f"{name}.mid.attn_1", channels)
        resnet(f"{name}.mid.block_2", channels, channels)

    levels = (32, 64)
    conv("encoder.conv_in", 3, 32, 3)
    channels = 32
    for i, out in enumerate(levels):
        resnet(f"encoder.down.{i}.block.0", channels, out)
        channels = out
        if i in attention_levels:
            attention(f"encoder.down.{i}.attn.0", out)
        if i < len(levels) - 1:
            conv(f"encoder.down.{i}.downsample.conv", out, out, 3)
    middle("encoder", channels)
    norm("encoder.norm_out", channels)
    factor = 2 if double_z else 1
    conv("encoder.conv_out", channels, factor * z_channels, 3)
    conv("quant_conv", factor * z_channels, factor * embed_dim, 1)
    conv("post_quant_conv", embed_dim, z_channels, 1)
    if num_embeddings:
        tensors["quantize.embedding.weight"] = torch.randn(
            num_embeddings, embed_dim, generator=generator
        )
    conv("decoder.conv_in", z_channels, channels, 3)
    middle("decoder", channels)
    for i in reversed(range(len(levels))):
        for j in range(2):
            resnet(f"decoder.up.{i}.block.{j}", channels, levels[i])
            channels = levels[i]
            if i in attention_levels:
                attention(f"decoder.up.{i}.attn.{j}", channels)
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", channels, channels, 3)
    norm("decoder.norm_out", channels)
    conv("decoder.conv_out", channels, 3, 3)
    return tensors


def diffusers_reference(tensors, model_class, attention_levels=(), **config):
    """A diffusers model loaded from LDM-named tensors by diffusers' own
    single-file conversion (strictly: every tensor must land); it leaves out
    attention inside the levels (taming's attn_resolutions), renamed here."""
    down = tuple(
        "AttnDownEncoderBlock2D" if i in attention_levels else "DownEncoderBlock2D"
        for i in range(2)
    )
    up = tuple(
        "AttnUpDecoderBlock2D" if i in attention_levels else "UpDecoderBlock2D"
        for i in reversed(range(2))
    )
    config = dict(
        block_out_channels=(32, 64),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=1,
        norm_num_groups=32,
        **config,
    )
    reference = model_class(**config)
    state = single_file_utils.convert_ldm_vae_checkpoint(tensors, config)
    state = {name: value for name, value in state.items() if ".attn." not in name}
    for name, value in tensors.items():
        for i in attention_levels:
            for ldm, ours in (
                (f"encoder.down.{i}.", f"encoder.down_blocks.{i}."),
                (f"decoder.up.{i}.", f"decoder.up_blocks.{1 - i}."),
            ):
                if name.startswith(ldm + "attn."):
                    rest = name[len(ldm + "attn.") :]
                    index, layer, kind = rest.split(".")
                    layer = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v"}.get(
                        layer, "to_out.0"
                    )
                    value = value if layer == "group_norm" or kind == "bias" else value[:, :, 0, 0]
                    state[f"{ours}attentions.{index}.{layer}.{kind}"] = value
    if "quantize.embedding.weight" in tensors:
        state["quantize.embedding.weight"] = tensors["quantize.embedding.weight"]
    reference.load_state_dict(state, strict=True)
    return reference.eval()


def test_stable_diffusion_single_safetensors_file(tmp_path, images):
    tensors = ldm_state_dict()
    reference = diffusers_reference(tensors, diffusers.AutoencoderKL, latent_channels=4)
    whole = {f"first_stage_model.{name}": value for name, value in tensors.items()}
    whole["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 4, 3, 3)
    path = tmp_path / "sd.safetensors"
    safetensors_torch.save_file(whole, path)

    summary = convert_checkpoint(path, tmp_path / "preset")
    assert summary["format"] == "ldm" and summary["kind"] == "kl"
    assert summary["options"]["double_z"] and summary["options"]["groups"] == 32
    # The file does not record its scaling factor: the preset says so.
    assert summary["scaling_factor"] == 1.0 and "--scaling-factor" in summary["notes"][0]
    assert_same_kl(from_preset(tmp_path / "preset"), reference, images)

    model, _ = model_from_checkpoint(path, scaling_factor=0.18215)
    assert model.scaling_factor == 0.18215 and model.shift_factor == 0.0


def test_taming_vqgan_ckpt_with_attention_and_loss_networks(tmp_path, images):
    tensors = ldm_state_dict(
        attention_levels=(1,), z_channels=6, double_z=False, embed_dim=5, num_embeddings=24
    )
    reference = diffusers_reference(
        tensors,
        diffusers.VQModel,
        attention_levels=(1,),
        latent_channels=6,
        vq_embed_dim=5,
        num_vq_embeddings=24,
    )
    # taming's Lightning checkpoint: the discriminator under loss., and more than tensors.
    state_dict = {**tensors, "loss.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4)}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state_dict, "global_step": 10, "epoch": 1}, path)

    summary = convert_checkpoint(path, tmp_path / "preset")
    assert summary["kind"] == "vq" and summary["options"]["attention_levels"] == [1]
    assert summary["options"]["z_channels"] == 6 and "scaling_factor" not in summary
    assert_same_vq(from_preset(tmp_path / "preset"), reference, images)


def test_bfloat16_safetensors_are_read_without_torch_s_help(tmp_path, images):
    tensors = {name: value.to(torch.bfloat16) for name, value in ldm_state_dict().items()}
    path = tmp_path / "vae.safetensors"
    safetensors_torch.save_file(tensors, path)
    read = read_state_dict(path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(read[name], value.float().numpy())
    widened = {name: value.float() for name, value in tensors.items()}
    reference = diffusers_reference(widened, diffusers.AutoencoderKL, latent_channels=4)
    model, _ = model_from_checkpoint(path)
    assert_same_kl(model, reference, images)


def test_a_converted_vqgan_fine_tunes_from_its_preset(tmp_path, images):
    diffusers_vq().save_pretrained(tmp_path / "vq")
    options = convert_checkpoint(tmp_path / "vq", tmp_path / "preset")["options"]
    model = build_autoencoder(
        "vqgan", (16, 16, 3), architecture="ldm", codebook_update="gradient", seed=3, **options
    )
    load_initial_weights(model, tmp_path / "preset")
    converted = from_preset(tmp_path / "preset")
    np.testing.assert_array_equal(
        to_numpy(model.encode_indices(images)), to_numpy(converted.encode_indices(images))
    )


# --- refusals -----------------------------------------------------------------


def saved_ldm(tmp_path, tensors, name="vae.safetensors"):
    path = tmp_path / name
    safetensors_torch.save_file(tensors, path)
    return path


def test_a_missing_tensor_is_named_with_its_shape(tmp_path):
    tensors = ldm_state_dict()
    del tensors["decoder.mid.block_2.conv1.weight"]
    with pytest.raises(ValueError, match=r"missing tensor decoder\.mid\.block_2\.conv1\.weight"):
        model_from_checkpoint(saved_ldm(tmp_path, tensors))


def test_an_unexpected_tensor_is_named_with_its_shape(tmp_path):
    tensors = ldm_state_dict()
    tensors["encoder.mid.extra.weight"] = torch.zeros(3, 5)
    with pytest.raises(
        ValueError, match=r"unexpected tensor encoder\.mid\.extra\.weight.*\(3, 5\)"
    ):
        model_from_checkpoint(saved_ldm(tmp_path, tensors))


def test_a_misshapen_tensor_is_refused(tmp_path):
    tensors = ldm_state_dict()
    tensors["decoder.conv_out.weight"] = torch.zeros(3, 32, 1, 1)
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.weight has shape \(3, 32, 1, 1\)"):
        model_from_checkpoint(saved_ldm(tmp_path, tensors))


def test_files_that_hold_no_autoencoder_are_refused(tmp_path):
    path = saved_ldm(tmp_path, {"model.diffusion_model.out.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="holds no LDM/taming or diffusers autoencoder"):
        model_from_checkpoint(path)
    (tmp_path / "vae.txt").write_text("weights")
    with pytest.raises(ValueError, match=r"ending in \.safetensors.*Received the suffix '\.txt'"):
        model_from_checkpoint(tmp_path / "vae.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        model_from_checkpoint(tmp_path / "folder")
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="holds a diffusers 'UNet2DModel'"):
        model_from_checkpoint(tmp_path / "folder")


def test_damaged_safetensors_are_refused(tmp_path):
    path = saved_ldm(tmp_path, {"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)})
    data = path.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="does not fit its byte range"):
        read_state_dict(tmp_path / "truncated.safetensors")
    (tmp_path / "huge.safetensors").write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(ValueError, match="header claims"):
        read_state_dict(tmp_path / "huge.safetensors")


class NotATensor:
    pass


def test_pickles_of_more_than_tensors_are_refused_not_run(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "object": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(path)


# --- the command line ---------------------------------------------------------


def test_vqkeras_convert_then_the_apps_use_the_preset(tmp_path, capsys):
    diffusers_vq().save_pretrained(tmp_path / "vq")
    out = tmp_path / "preset"
    assert main(["convert", str(tmp_path / "vq"), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_name"] == "VQVAE" and summary["preset"] == str(out)

    # An existing preset is kept unless --overwrite.
    assert main(["convert", str(tmp_path / "vq"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", images=rng.integers(0, 256, (4, 16, 16, 3), "uint8"))
    data = str(tmp_path / "images.npz")
    assert main(["evaluate", str(out), "--input", data, "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    args = ["reconstruct", "--model", str(out), "--input", data, "--out", str(tmp_path / "r")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    codes = tmp_path / "codes.npz"
    assert main(["export-latents", "--model", str(out), "--input", data, "--out", str(codes)]) == 0
    capsys.readouterr()


def test_vqkeras_convert_refuses_a_scaling_factor_for_codes(tmp_path, capsys):
    diffusers_vq().save_pretrained(tmp_path / "vq")
    args = ["convert", str(tmp_path / "vq"), "--out", str(tmp_path / "p"), "--scaling-factor", "2"]
    assert main(args) == 2
    assert "VQ autoencoder" in capsys.readouterr().err
