"""`vqkeras convert`: a diffusers folder or an LDM/taming checkpoint to a
vqkeras preset folder, usable by every app and on every backend.

SOURCE is one of:

    a diffusers AutoencoderKL or VQModel folder (config.json with
    diffusion_pytorch_model.safetensors or .bin), or a pipeline folder with
    one in vae/
    a latent-diffusion / Stable Diffusion single file (.ckpt or .safetensors;
    the autoencoder under first_stage_model.), or a standalone VAE file such
    as SDXL's
    a taming-transformers VQGAN checkpoint (.ckpt)

The format is detected; the architecture (levels, channels, attention,
latent channels, codebook) is read off the tensors. .safetensors files need
no PyTorch; .ckpt and .bin files need it and are loaded with
weights_only=True, which never runs code from the file. The preset's
metadata.json records the source's sha256 and, for a KL autoencoder, the
latent scaling and shift factors (docs/converting.md).

Examples:

    vqkeras convert sd-vae-ft-mse/ --out presets/sd_vae
    vqkeras convert vqgan_imagenet_f16_1024/checkpoints/last.ckpt --out presets/taming_f16
    vqkeras reconstruct --model presets/sd_vae --input photos/ --out runs/sd_vae
"""

from vqkeras.apps.console import notice
from vqkeras.converters import convert_checkpoint


def run(args):
    summary = convert_checkpoint(
        args.source,
        args.out,
        image_size=args.image_size,
        scaling_factor=args.scaling_factor,
        shift_factor=args.shift_factor,
        overwrite=args.overwrite,
    )
    for note in summary["notes"]:
        notice(note)
    return summary
