"""Checkpoints that users already hold, as vqkeras presets.

    convert_checkpoint(source, out)     a diffusers folder or an LDM/taming file -> preset

Sources, detected from what they hold:

- a diffusers `AutoencoderKL` or `VQModel` folder: `config.json` beside
  `diffusion_pytorch_model.safetensors` (or `.bin`); a pipeline folder with
  one such model in a subfolder (`vae/`) is taken too;
- a latent-diffusion or taming-transformers single file (`.ckpt` or
  `.safetensors`): Stable Diffusion's (the autoencoder under the
  `first_stage_model.` prefix), a standalone VAE such as SDXL's, or taming's
  VQGAN (`encoder.`, `decoder.`, `quantize.`, `quant_conv`,
  `post_quant_conv`; its discriminator and LPIPS weights under `loss.` are
  left out).

All of them share one architecture, the `ldm` architecture of
`vqkeras.families.architectures`: its options are read off the tensors'
names and shapes (the number of levels, their channels, residual blocks and
attention; the latent channels; the codebook), with the GroupNorm groups, the
scaling and shift factors from the diffusers config where it gives them (a
single file does not hold them: LDM and taming always use 32 groups). A KL
autoencoder becomes a `KLVAE`, a VQ one a `VQVAE` with a `VectorQuantizer`
(which `vqkeras train --family vqgan --codebook-update gradient --init-from
PRESET` fine-tunes with the options `vqkeras convert` prints).

diffusers' `VectorQuantizer(legacy=True)` (taming's) swaps the weights of its
two codebook loss terms; it changes no output, so only a fine-tuned model
would see it, and vqkeras trains with the usual commitment cost.

The tensors are read by `vqkeras.checkpoints`: safetensors without PyTorch,
PyTorch files with `weights_only=True`.
"""

import dataclasses
import json
import os
import re

from vqkeras.checkpoints import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, read_state_dict

DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DIFFUSERS_CLASSES = {"AutoencoderKL": "kl", "VQModel": "vq"}
# Stable Diffusion's single files hold the autoencoder under one of these
# prefixes (the second in some later single files).
AUTOENCODER_PREFIXES = ("first_stage_model.", "vae.")
# taming's VQGAN files also hold the training loss's networks.
IGNORED_PREFIXES = ("loss.",)
# The registered architecture of every converted model.
LDM_ARCHITECTURE = "ldm"
# What LDM and taming build with; diffusers' defaults are the same.
LDM_GROUPS = 32
# Latent diffusion's buffer of the scaling factor it measured (scale_by_std).
LDM_SCALE_FACTOR = "scale_factor"
# The size a model is built for when the source does not say (LDM's and
# taming's training size); the model takes other sizes too.
DEFAULT_IMAGE_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """An autoencoder checkpoint read from disk, in LDM names.

    Attributes:
        source: the folder or file given.
        files: the files the tensors came from.
        format: "diffusers" or "ldm" (latent diffusion and taming).
        kind: "kl" (AutoencoderKL) or "vq" (VQModel, taming's VQGAN).
        tensors: name -> float32 array, in LDM/taming names
            (`encoder.down.0.block.1.conv2.weight`).
        config: the diffusers config, or {} for a single file.
        factors: the latent `scaling_factor` and `shift_factor` the source
            gives (a diffusers config; the `scale_factor` that latent
            diffusion stores when it measured it); {} where it gives none.
    """

    source: str
    files: tuple
    format: str
    kind: str
    tensors: dict
    config: dict
    factors: dict


def read_checkpoint(source):
    """Reads a diffusers folder or an LDM/taming file (module docstring).

    Raises:
        FileNotFoundError: when `source` does not exist.
        ValueError: when it is none of those, naming what was found.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        return _read_diffusers_folder(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"No checkpoint at {source}.")
    tensors = read_state_dict(source)
    factors = {}
    if tensors.get(LDM_SCALE_FACTOR) is not None and tensors[LDM_SCALE_FACTOR].size == 1:
        factors["scaling_factor"] = float(tensors[LDM_SCALE_FACTOR].reshape(()))
    return Checkpoint(
        source=source,
        files=(source,),
        format="ldm",
        kind=_kind_of(tensors, source),
        tensors=_ldm_tensors(tensors, source),
        config={},
        factors=factors,
    )


def _read_diffusers_folder(folder):
    if not os.path.exists(os.path.join(folder, DIFFUSERS_CONFIG)):
        autoencoders = _autoencoder_subfolders(folder)
        if len(autoencoders) == 1:
            return _read_diffusers_folder(autoencoders[0])
        found = (
            f"autoencoders in {', '.join(map(os.path.basename, autoencoders))}: give one"
            if autoencoders
            else f"no {DIFFUSERS_CONFIG}, nor a subfolder with one of an autoencoder"
        )
        raise ValueError(
            f"{folder} is not a diffusers model folder: it has {found}. Expected a folder of "
            f"an {' or '.join(DIFFUSERS_CLASSES)}, or a single "
            f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)} file."
        )
    with open(os.path.join(folder, DIFFUSERS_CONFIG)) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{folder}/{DIFFUSERS_CONFIG} is not JSON: {error}") from None
    class_name = config.get("_class_name") if isinstance(config, dict) else None
    if class_name not in DIFFUSERS_CLASSES:
        raise ValueError(
            f"{folder} holds a diffusers {class_name!r}; expected one of "
            f"{', '.join(DIFFUSERS_CLASSES)}."
        )
    weights = [os.path.join(folder, name) for name in DIFFUSERS_WEIGHTS]
    weights = [path for path in weights if os.path.exists(path)]
    if not weights:
        raise ValueError(
            f"{folder} has no weights: expected {' or '.join(DIFFUSERS_WEIGHTS)} "
            "(sharded or variant files are not read: save the model with save_pretrained)."
        )
    tensors = read_state_dict(weights[0])
    kind = _kind_of(tensors, weights[0])
    if kind != DIFFUSERS_CLASSES[class_name]:
        raise ValueError(
            f"{folder}: its config names a {class_name} but its weights "
            f"{'have' if kind == 'vq' else 'lack'} a codebook (quantize.embedding.weight)."
        )
    return Checkpoint(
        source=folder,
        files=(weights[0],),
        format="diffusers",
        kind=kind,
        tensors=_ldm_tensors(
            tensors, weights[0], num_up_blocks=_count(tensors, "decoder.up_blocks.{}.")
        ),
        config=config,
        factors={
            name: float(config[name])
            for name in ("scaling_factor", "shift_factor")
            if config.get(name) is not None
        },
    )


def _autoencoder_subfolders(folder):
    """The subfolders of a diffusers pipeline folder that hold an autoencoder
    (`vae/` in Stable Diffusion's)."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        config = os.path.join(entry.path, DIFFUSERS_CONFIG)
        if entry.is_dir() and os.path.isfile(config):
            try:
                with open(config) as f:
                    class_name = json.load(f).get("_class_name")
            except (OSError, ValueError, AttributeError):
                continue
            if class_name in DIFFUSERS_CLASSES:
                found.append(entry.path)
    return found


def _kind_of(tensors, path):
    names = _autoencoder_names(tensors)
    if not any(name.startswith("encoder.conv_in.") for name in names):
        shown = ", ".join(sorted(tensors)[:5]) or "no tensors"
        raise ValueError(
            f"{path} holds no LDM/taming or diffusers autoencoder: expected "
            f"encoder.conv_in.weight (or under {' or '.join(AUTOENCODER_PREFIXES)}). "
            f"Found: {shown}{', ...' if len(tensors) > 5 else ''}"
        )
    return "vq" if "quantize.embedding.weight" in names else "kl"


def _autoencoder_names(tensors):
    """Stable Diffusion's autoencoder prefix, stripped; LDM and taming's loss
    networks dropped: name in the file -> name in the autoencoder."""
    for prefix in AUTOENCODER_PREFIXES:
        if f"{prefix}encoder.conv_in.weight" in tensors:
            return {name[len(prefix) :]: name for name in tensors if name.startswith(prefix)}
    return {name: name for name in tensors if not name.startswith(IGNORED_PREFIXES)}


# diffusers names -> LDM names, applied in order to each name (up blocks are
# renumbered separately: diffusers counts them from the decoder's input).
_DIFFUSERS_RENAMES = (
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
    (r"^encoder\.down_blocks\.(\d+)\.attentions\.", r"encoder.down.\1.attn."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.", r"decoder.up.\1.block."),
    (r"^decoder\.up_blocks\.(\d+)\.attentions\.", r"decoder.up.\1.attn."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up.\1.upsample."),
    (r"\.mid_block\.resnets\.0\.", r".mid.block_1."),
    (r"\.mid_block\.resnets\.1\.", r".mid.block_2."),
    (r"\.mid_block\.attentions\.0\.", r".mid.attn_1."),
    (r"\.conv_shortcut\.", r".nin_shortcut."),
    # Attention, in today's names and in those of older diffusers files.
    (r"\.(attn\.\d+|attn_1)\.group_norm\.", r".\1.norm."),
    (r"\.(attn\.\d+|attn_1)\.(to_q|query)\.", r".\1.q."),
    (r"\.(attn\.\d+|attn_1)\.(to_k|key)\.", r".\1.k."),
    (r"\.(attn\.\d+|attn_1)\.(to_v|value)\.", r".\1.v."),
    (r"\.(attn\.\d+|attn_1)\.(to_out\.0|proj_attn)\.", r".\1.proj_out."),
)
_DIFFUSERS_UP_BLOCK = re.compile(r"^decoder\.up_blocks\.(\d+)\.")


def _ldm_tensors(tensors, path, num_up_blocks=None):
    """The autoencoder's tensors in LDM names; diffusers names are renamed
    when `num_up_blocks` (the decoder's levels) is given."""
    renamed = {}
    for name, stored in _autoencoder_names(tensors).items():
        if num_up_blocks is not None:
            up_block = _DIFFUSERS_UP_BLOCK.match(name)
            if up_block:
                level = num_up_blocks - 1 - int(up_block.group(1))
                name = f"decoder.up_blocks.{level}." + name[up_block.end() :]
            for pattern, replacement in _DIFFUSERS_RENAMES:
                name = re.sub(pattern, replacement, name)
        if name in renamed:
            raise ValueError(f"{path}: two tensors are named {name} (as {stored} and another).")
        renamed[name] = tensors[stored]
    return renamed


def _shape(checkpoint, name):
    if name not in checkpoint.tensors:
        raise ValueError(f"{checkpoint.source}: missing tensor {name}.")
    return checkpoint.tensors[name].shape


def _count(tensors, pattern):
    """How many consecutive indices `pattern.format(i)` names a tensor prefix of."""
    count = 0
    while any(name.startswith(pattern.format(count)) for name in tensors):
        count += 1
    return count


def architecture_of(checkpoint):
    """The options that rebuild `checkpoint`'s autoencoder.

    The `ldm` architecture's options come from the tensors' names and shapes;
    the GroupNorm groups from the diffusers config (32 for single files).

    Returns:
        `(options, image_channels)`: the `ldm` architecture's options with
        the latent channels (`latent_dim`) and, for a VQ autoencoder, the
        codebook size (`num_embeddings`), as `vqkeras train` takes them.

    Raises:
        ValueError: where the tensors do not describe an LDM autoencoder, or
            disagree with the config.
    """
    tensors = checkpoint.tensors
    channels, image_channels = _shape(checkpoint, "encoder.conv_in.weight")[:2]
    num_levels = _count(tensors, "encoder.down.{}.")
    num_res_blocks = _count(tensors, "encoder.down.0.block.{}.")
    if num_levels == 0 or num_res_blocks == 0:
        raise ValueError(
            f"{checkpoint.source}: found no encoder levels (encoder.down.0.block.0.*): not an "
            "LDM/taming or diffusers autoencoder."
        )
    multipliers = []
    for level in range(num_levels):
        level_channels = _shape(
            checkpoint, f"encoder.down.{level}.block.{num_res_blocks - 1}.conv2.weight"
        )[0]
        if level_channels % channels:
            raise ValueError(
                f"{checkpoint.source}: level {level} has {level_channels} channels, not a "
                f"multiple of the first convolution's {channels}; the ldm architecture needs "
                "channel multipliers."
            )
        multipliers.append(level_channels // channels)
    attention_levels = tuple(
        level for level in range(num_levels) if f"encoder.down.{level}.attn.0.q.weight" in tensors
    )
    conv_out = _shape(checkpoint, "encoder.conv_out.weight")[0]
    z_channels = _shape(checkpoint, "decoder.conv_in.weight")[1]
    quant_conv = "quant_conv.weight" in tensors
    if quant_conv != ("post_quant_conv.weight" in tensors):
        raise ValueError(
            f"{checkpoint.source}: has {'quant_conv' if quant_conv else 'post_quant_conv'} "
            "without the other; vqkeras's ldm architecture has both or neither."
        )
    latent_channels = _shape(checkpoint, "quant_conv.weight")[0] if quant_conv else conv_out
    options = {
        "channels": int(channels),
        "channel_multipliers": tuple(int(m) for m in multipliers),
        "num_res_blocks": int(num_res_blocks),
        "attention_levels": attention_levels,
        "mid_block_attention": "encoder.mid.attn_1.q.weight" in tensors,
        "z_channels": int(z_channels),
        "quant_conv": quant_conv,
        "groups": int(checkpoint.config.get("norm_num_groups", LDM_GROUPS)),
    }
    if checkpoint.kind == "vq":
        num_embeddings, latent_dim = _shape(checkpoint, "quantize.embedding.weight")
        options.update(latent_dim=int(latent_dim), num_embeddings=int(num_embeddings))
    else:
        options.update(latent_dim=int(latent_channels) // 2, double_z=conv_out == 2 * z_channels)
    _check_config(checkpoint, options)
    return options, int(image_channels)


def _check_config(checkpoint, options):
    """A diffusers config that disagrees with its weights is refused."""
    config = checkpoint.config
    if not config:
        return
    problems = []
    expected = [options["channels"] * m for m in options["channel_multipliers"]]
    if list(config.get("block_out_channels", expected)) != expected:
        problems.append(f"block_out_channels {config['block_out_channels']} vs weights {expected}")
    if config.get("layers_per_block", options["num_res_blocks"]) != options["num_res_blocks"]:
        problems.append(
            f"layers_per_block {config['layers_per_block']} vs weights {options['num_res_blocks']}"
        )
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn {config['act_fn']!r}: only 'silu' is this architecture's")
    if config.get("norm_type", "group") != "group":
        problems.append(f"norm_type {config['norm_type']!r}: only 'group' is supported")
    if config.get("use_quant_conv", True) != config.get("use_post_quant_conv", True):
        problems.append("use_quant_conv differs from use_post_quant_conv")
    for key, kind in (("down_block_types", "Down"), ("up_block_types", "Up")):
        known = {f"{kind}EncoderBlock2D", f"Attn{kind}EncoderBlock2D"}
        if kind == "Up":
            known = {"UpDecoderBlock2D", "AttnUpDecoderBlock2D"}
        unknown = sorted(set(config.get(key, ())) - known)
        if unknown:
            problems.append(f"{key} {unknown}: expected {sorted(known)}")
    if problems:
        raise ValueError(
            f"{checkpoint.source}: the diffusers config disagrees with this architecture or "
            f"with its weights: {'; '.join(problems)}."
        )


# How a PyTorch tensor becomes a Keras variable's value.
def _conv_kernel(value):
    return value.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _dense_kernel(value):
    # Attention projections: (out, in) in diffusers, (out, in, 1, 1) in LDM.
    return value.reshape(value.shape[:2]).T


def _same(value):
    return value


def _conv(name, layer):
    yield f"{name}.weight", layer.kernel, _conv_kernel
    yield f"{name}.bias", layer.bias, _same


def _dense(name, layer):
    yield f"{name}.weight", layer.kernel, _dense_kernel
    yield f"{name}.bias", layer.bias, _same


def _norm(name, layer):
    yield f"{name}.weight", layer.gamma, _same
    yield f"{name}.bias", layer.beta, _same


def _resnet(name, block):
    yield from _norm(f"{name}.norm1", block.norm1)
    yield from _conv(f"{name}.conv1", block.conv1)
    yield from _norm(f"{name}.norm2", block.norm2)
    yield from _conv(f"{name}.conv2", block.conv2)
    if block.conv_shortcut is not None:
        yield from _conv(f"{name}.nin_shortcut", block.conv_shortcut)


def _attention(name, block):
    yield from _norm(f"{name}.norm", block.norm)
    for projection in ("q", "k", "v", "proj_out"):
        yield from _dense(f"{name}.{projection}", getattr(block, projection))


def _middle(name, network):
    yield from _resnet(f"{name}.mid.block_1", network.mid_block_1)
    if network.mid_attention is not None:
        yield from _attention(f"{name}.mid.attn_1", network.mid_attention)
    yield from _resnet(f"{name}.mid.block_2", network.mid_block_2)


def _levels(name, levels, resample):
    for i, level in enumerate(levels):
        for j, block in enumerate(level.blocks):
            yield from _resnet(f"{name}.{i}.block.{j}", block)
        for j, block in enumerate(level.attentions):
            yield from _attention(f"{name}.{i}.attn.{j}", block)
        resampling = getattr(level, resample)
        if resampling is not None:
            yield from _conv(f"{name}.{i}.{resample}.conv", resampling.conv)


def ldm_variables(model):
    """`(LDM name, Keras variable, conversion)` of every weight of a vqkeras
    `ldm`-architecture KLVAE or VQVAE, in the names of `Checkpoint.tensors`."""
    encoder, decoder = model.encoder, model.decoder
    yield from _conv("encoder.conv_in", encoder.conv_in)
    yield from _levels("encoder.down", encoder.down, "downsample")
    yield from _middle("encoder", encoder)
    yield from _norm("encoder.norm_out", encoder.norm_out)
    yield from _conv("encoder.conv_out", encoder.conv_out)
    if encoder.quant_conv is not None:
        yield from _conv("quant_conv", encoder.quant_conv)
    if hasattr(model, "quantizer"):
        yield "quantize.embedding.weight", model.quantizer.embeddings, _same
    if decoder.post_quant_conv is not None:
        yield from _conv("post_quant_conv", decoder.post_quant_conv)
    yield from _conv("decoder.conv_in", decoder.conv_in)
    yield from _middle("decoder", decoder)
    yield from _levels("decoder.up", decoder.up, "upsample")
    yield from _norm("decoder.norm_out", decoder.norm_out)
    yield from _conv("decoder.conv_out", decoder.conv_out)


def load_checkpoint_weights(model, checkpoint):
    """Sets every weight of `model` (as `architecture_of(checkpoint)` built it)
    from `checkpoint`, after checking that each tensor is there, has the
    variable's shape and is used.

    Raises:
        ValueError: naming the first missing, misshapen or unexpected tensor.
    """
    tensors = checkpoint.tensors
    values, used = [], set()
    for name, variable, convert in ldm_variables(model):
        if name not in tensors:
            raise ValueError(
                f"{checkpoint.source}: missing tensor {name} of shape "
                f"{_torch_shape(variable.shape, convert)}, which this architecture needs."
            )
        value = _converted(tensors[name], convert)
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{checkpoint.source}: tensor {name} has shape {tuple(tensors[name].shape)}; "
                f"expected {_torch_shape(variable.shape, convert)}."
            )
        values.append((variable, value))
        used.add(name)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        name = unexpected[0]
        raise ValueError(
            f"{checkpoint.source}: unexpected tensor {name} of shape {tuple(tensors[name].shape)} "
            f"({len(unexpected)} unused in all), which the {checkpoint.format} "
            f"{'VQ' if checkpoint.kind == 'vq' else 'KL'} autoencoder it was read as does not have."
        )
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))


def _converted(value, convert):
    """`convert(value)`, or None where `value`'s rank does not fit it."""
    if convert is _conv_kernel and value.ndim != 4:
        return None
    if convert is _dense_kernel and not (
        value.ndim == 2 or (value.ndim == 4 and value.shape[2:] == (1, 1))
    ):
        return None
    return convert(value)


def _torch_shape(shape, convert):
    """The PyTorch shape of a Keras variable of `shape`."""
    shape = tuple(shape)
    if convert is _conv_kernel:
        return (shape[3], shape[2], shape[0], shape[1])
    if convert is _dense_kernel:
        return (shape[1], shape[0])
    return shape


def model_from_checkpoint(source, *, image_size=None, scaling_factor=None, shift_factor=None):
    """The vqkeras model of a diffusers folder or an LDM/taming file.

    Args:
        source: the folder or file (module docstring).
        image_size: the square size the model is built for (it takes other
            sizes too); default the diffusers config's `sample_size`, else
            `DEFAULT_IMAGE_SIZE`.
        scaling_factor, shift_factor: the latent normalisation of a KL
            autoencoder, where the source lacks it or to override it.

    Returns:
        `(model, checkpoint)`: a built `KLVAE` or `VQVAE` of the `ldm`
        architecture with the source's weights, and the `Checkpoint` read.
    """
    checkpoint = read_checkpoint(source)
    options, image_channels = architecture_of(checkpoint)
    size = image_size or _sample_size(checkpoint.config) or DEFAULT_IMAGE_SIZE
    model = _build(checkpoint.kind, options, (size, size, image_channels))
    load_checkpoint_weights(model, checkpoint)
    if checkpoint.kind == "kl":
        factors = {**checkpoint.factors}
        factors.update(
            {
                name: value
                for name, value in (
                    ("scaling_factor", scaling_factor),
                    ("shift_factor", shift_factor),
                )
                if value is not None
            }
        )
        for name, value in factors.items():
            setattr(model, name, value)
    elif scaling_factor is not None or shift_factor is not None:
        raise ValueError(
            f"{checkpoint.source} is a VQ autoencoder: its codes have no scaling or shift factor. "
            f"Received scaling_factor={scaling_factor}, shift_factor={shift_factor}."
        )
    return model, checkpoint


def _build(kind, options, image_shape):
    """A built KLVAE or VQVAE of the `ldm` architecture, as the converted
    checkpoint's kind has it (with the families' default loss weights)."""
    from vqkeras.families import get_architecture
    from vqkeras.layers import VectorQuantizer
    from vqkeras.models import KLVAE, VQVAE

    architecture = get_architecture(LDM_ARCHITECTURE)
    layers = architecture(
        architecture.Options.from_dict(
            {name: options[name] for name in architecture.Options.names() if name in options},
            f"architecture {LDM_ARCHITECTURE!r}",
        )
    )
    decoder = layers.decoder(image_shape[-1])
    latent_dim, name = options["latent_dim"], f"{kind}_autoencoder"
    if kind == "vq":
        quantizer = VectorQuantizer(options["num_embeddings"], latent_dim)
        model = VQVAE(layers.encoder(latent_dim), decoder, quantizer, name=name)
    else:
        model = KLVAE(layers.encoder(2 * latent_dim), decoder, name=name)
    model.build((None, *image_shape))
    return model


def _sample_size(config):
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)) and size:
        size = size[0]
    return size if isinstance(size, int) and size > 0 else None


def convert_checkpoint(
    source, out, *, image_size=None, scaling_factor=None, shift_factor=None, overwrite=False
):
    """Converts a diffusers folder or an LDM/taming file to a vqkeras preset.

    The preset folder holds the config, the weights and metadata.json with
    `converted_from` (the source, its format, each file's sha256, the
    diffusers config) and, for a KL autoencoder, the latent scaling and shift
    factors. `vqkeras.presets.from_preset(out)` loads it on any backend.

    Args:
        source: the folder or file (module docstring).
        out: the preset folder to write (atomically).
        image_size, scaling_factor, shift_factor: as `model_from_checkpoint`.
        overwrite: replace an existing `out`.

    Returns:
        A summary: the preset folder, the class, the options read, the
        factors, and `notes` that a user should see (a KL source without a
        recorded scaling factor).
    """
    from vqkeras.presets import save_to_preset, sha256_of

    out = os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it.")
    model, checkpoint = model_from_checkpoint(
        source, image_size=image_size, scaling_factor=scaling_factor, shift_factor=shift_factor
    )
    options, _ = architecture_of(checkpoint)
    notes = []
    factors = {}
    if checkpoint.kind == "kl":
        factors = {"scaling_factor": model.scaling_factor, "shift_factor": model.shift_factor}
        if "scaling_factor" not in checkpoint.factors and scaling_factor is None:
            notes.append(
                f"{checkpoint.source} does not record its latents' scaling factor: the preset "
                "has 1.0. Give the source's (Stable Diffusion 1.x and 2.x: 0.18215, SDXL: "
                "0.13025) with --scaling-factor, or measure one with "
                "model.compute_scaling_factor(images)."
            )
    converted_from = {
        "source": os.path.basename(os.path.normpath(checkpoint.source)),
        "format": checkpoint.format,
        "kind": checkpoint.kind,
        "files": [
            {"name": os.path.basename(path), "sha256": sha256_of(path)} for path in checkpoint.files
        ],
        "config": checkpoint.config,
    }
    metadata = {
        "converted_from": converted_from,
        "architecture": LDM_ARCHITECTURE,
        "architecture_options": _jsonable(options),
        **factors,
        "dataset": "not recorded: converted weights (see the source's documentation)",
    }
    save_to_preset(model, out, metadata=metadata, overwrite=overwrite)
    return {
        "preset": os.path.abspath(out),
        "class_name": type(model).__name__,
        "format": checkpoint.format,
        "kind": checkpoint.kind,
        "options": _jsonable(options),
        **factors,
        "sha256": {item["name"]: item["sha256"] for item in converted_from["files"]},
        "notes": notes,
    }


def _jsonable(options):
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in options.items()
    }
