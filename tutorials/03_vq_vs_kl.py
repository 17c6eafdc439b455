# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Discrete or continuous latents: VQ against KL
#
# Modern image generators work in two stages: an autoencoder compresses images into a
# latent grid, then a second model learns to generate latent grids. Two kinds of first
# stage dominate:
#
# - a **VQ** autoencoder (VQ-VAE, VQGAN) gives a grid of integer *tokens*, modelled by a
#   PixelCNN or a Transformer, as a language model models words;
# - a **KL** autoencoder (the AutoencoderKL of latent diffusion) gives a grid of
#   continuous vectors, kept close to a standard Gaussian, modelled by a diffusion model.
#
# This notebook puts the two side by side with pretrained zoo models of the same
# encoder-decoder design (`vqvae_mnist` / `klvae_mnist`, and `vqvae_cifar10` /
# `klvae_cifar10`). You will see:
#
# - what each latent looks like, and what it costs in bits;
# - reconstructions side by side: sharpness and blur, measured;
# - why integer tokens suit Transformers and continuous latents suit diffusion;
# - latent interpolation: a smooth path in one, jumps in the other.
#
# Nothing is trained here. **Quick mode** (`VQKERAS_TUTORIAL_QUICK=1`, the default)
# measures on the 256 MNIST and 256 CIFAR-10 test images shipped with vqkeras, offline.
# **Full mode** (`VQKERAS_TUTORIAL_QUICK=0`) measures on the whole MNIST and CIFAR-10
# test splits, downloaded with `keras.datasets` (the CIFAR-10 models were trained on a
# JPEG-derived copy of CIFAR-10, so their figures on the original pixels differ slightly
# from their model cards).

# %%
import math
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.validation import to_unit_range

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    mnist_x, mnist_y = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1)
    cifar_x, cifar_y = vqkeras.samples.load("cifar10")  # uint8 (256, 32, 32, 3)
else:
    _, (mnist_x, mnist_y) = keras.datasets.mnist.load_data()
    mnist_x = mnist_x[..., None]
    _, (cifar_x, cifar_y) = keras.datasets.cifar10.load_data()
    cifar_y = cifar_y[:, 0]
models = {
    name: vqkeras.from_preset(name)
    for name in ("vqvae_mnist", "klvae_mnist", "vqvae_cifar10", "klvae_cifar10")
}
data = {"mnist": mnist_x, "cifar10": cifar_x}
print({name: type(model).__name__ for name, model in models.items()})

# %% [markdown]
# ## Two latents of one image
#
# `vqvae_mnist` turns a digit into a 7x7 grid of integers in $[0, 128)$. `klvae_mnist`
# turns it into a Gaussian posterior $q(z\mid x)$ over a 7x7x4 grid of floats; its mean
# is the latent used for reconstruction, and the posterior's spread says how precisely each
# value matters.

# %%
one = mnist_x[:1]
codes = keras.ops.convert_to_numpy(models["vqvae_mnist"].encode_indices(one))
posterior = models["klvae_mnist"].encode(one)
mean = keras.ops.convert_to_numpy(posterior.mean)
std = keras.ops.convert_to_numpy(posterior.std)
print("VQ codes", codes.shape, "\n", codes[0])
print("KL latent mean", mean.shape, "first channel:\n", np.round(mean[0, ..., 0], 2))
print(f"KL posterior std: median {np.median(std):.4f} (the prior's is 1)")

# %% [markdown]
# The posterior standard deviations are tiny next to the prior's 1: with latent
# diffusion's KL weight of $10^{-6}$, the KL term barely constrains the encoder, and the
# latent is close to a deterministic code. Its information content is the KL to the
# prior, $\mathrm{KL}(q(z\mid x) \Vert \mathcal{N}(0, I))$ nats; the VQ grid's is at most
# $49 \log_2 128 = 343$ bits.

# %% [markdown]
# ## Reconstructions, measured
#
# `evaluate_reconstructions` gives MSE, PSNR and SSIM (reconstructions clipped to
# [0, 1]). Blur has a measure of its own: the *edge energy ratio*, the mean magnitude of
# the image gradient (differences between neighbouring pixels) of the reconstructions
# divided by that of the originals. 1 keeps all the edges; a blurry model falls below 1.


# %%
def edge_energy(images):
    images = np.asarray(images, dtype="float32")
    return np.mean(np.abs(np.diff(images, axis=1))) + np.mean(np.abs(np.diff(images, axis=2)))


def bits_of(model, images):
    """Bits per image: the code grid's size for VQ, the KL to the prior for KL."""
    if model.code_grids():
        return sum(grid.bits_per_image for grid in model.code_grids()), "codes"
    kl = [keras.ops.convert_to_numpy(model.encode(b).kl()) for b in np.array_split(images, 8)]
    return float(np.mean(np.concatenate(kl))) / math.log(2), "KL"


reconstructions = {}
for name, model in models.items():
    images = data[name.split("_")[1]]
    r = vqkeras.evaluation.evaluate_reconstructions(model, images)
    reconstructions[name] = np.clip(model.predict(images[:8], verbose=0), 0, 1)
    recon_all = np.clip(model.predict(images[:256], verbose=0), 0, 1)
    ratio = edge_energy(recon_all) / edge_energy(to_unit_range(images[:256]))
    bits, kind = bits_of(model, images[:512])
    print(
        f"{name:14s} PSNR {r['psnr_db']:5.2f} dB  SSIM {r['ssim']:.3f}  "
        f"edge energy ratio {ratio:.2f}  {bits:6.0f} bits per image ({kind})"
    )

# %%
fig, axes = plt.subplots(6, 8, figsize=(10, 7.8))
rows = [
    ("MNIST", to_unit_range(mnist_x[:8])),
    ("vqvae_mnist", reconstructions["vqvae_mnist"]),
    ("klvae_mnist", reconstructions["klvae_mnist"]),
    ("CIFAR-10", to_unit_range(cifar_x[:8])),
    ("vqvae_cifar10", reconstructions["vqvae_cifar10"]),
    ("klvae_cifar10", reconstructions["klvae_cifar10"]),
]
for r, (name, batch) in enumerate(rows):
    for c, image in enumerate(batch):
        axes[r, c].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the numbers rather than a general rule:
#
# - the KL models carry thousands of bits per image against the VQ models' few hundred,
#   and reconstruct more accurately for it (PSNR, SSIM);
# - on MNIST both keep the edge energy of the digits; on CIFAR-10 both lose part of it:
#   fine texture is what a small latent drops first, and the CIFAR-10 images have far
#   more of it than digits.
#
# Blur is not a property of "continuous" latents: it comes from *too few bits*. A VAE whose
# KL weight is large (tutorial 1, `kl_weight=1`) keeps a few dozen bits and is very blurry; a
# VQ model with a coarse grid or a small codebook loses texture. Latent diffusion chose a
# tiny KL weight for this reason: the first stage should lose little, and the second stage
# should do the generating.
#
# ## Why integer tokens suit Transformers
#
# A grid of integers is a sentence: read it in raster order and each position is a token
# from a vocabulary of $K$ words. An autoregressive model (a PixelCNN here, a
# Transformer in VQGAN or DALL-E) predicts each token from those before it with a softmax
# over $K$ classes, trained by cross-entropy; sampling is drawing from that categorical
# distribution, one token at a time. The likelihood is exact, and it measures compression
# directly: the prior's negative log-likelihood is the number of nats an ideal coder needs
# per code.
#
# The zoo's PixelCNN prior for `vqvae_mnist` on the codes of the images above:

# %%
prior = vqkeras.from_preset("pixelcnn_vqvae_mnist")
mnist_codes = vqkeras.evaluation.encode_indices(models["vqvae_mnist"], mnist_x)
nll = vqkeras.evaluation.evaluate_prior(prior, mnist_codes, mnist_y.astype("int32"))
uniform = math.log(models["vqvae_mnist"].num_embeddings)
cells = math.prod(mnist_codes.shape[1:])
print("a digit as a token sequence:", mnist_codes[0].ravel().tolist())
print(
    f"prior NLL {nll['nll_nats_per_code']:.3f} nats per code against {uniform:.3f} for "
    f"uniform guessing: {cells * nll['nll_nats_per_code'] / math.log(2):.0f} bits per digit "
    f"instead of {cells * uniform / math.log(2):.0f}"
)

# %% [markdown]
# ## Why continuous latents suit diffusion
#
# A diffusion model learns to undo Gaussian noise. Its forward process blends a latent
# $z_0$ with noise, $z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$,
# and a network learns to predict $\varepsilon$ from $z_t$. That needs a continuous space
# where a small step is a small change of the image, and latents of roughly unit scale so
# that the noise schedule means the same thing in every dimension. The KL-VAE provides
# both: a smooth decoder, and a `scaling_factor` (1 / the standard deviation of the
# latents over the training images) that `encode_scaled` applies.

# %%
klvae = models["klvae_mnist"]
scaled = keras.ops.convert_to_numpy(klvae.encode_scaled(mnist_x, seed=0))
print(
    f"scaling_factor {klvae.scaling_factor:.4f}; scaled latents: mean {scaled.mean():.3f}, "
    f"std {scaled.std():.3f}"
)
noise = keras.ops.convert_to_numpy(keras.random.normal(scaled[:6].shape, seed=0))
levels = [1.0, 0.9, 0.7, 0.5, 0.3, 0.0]  # sqrt(alpha_bar): 1 is clean, 0 is pure noise
fig, axes = plt.subplots(1, len(levels), figsize=(1.6 * len(levels), 1.9))
for ax, a in zip(axes, levels):
    noisy = a * scaled[:1] + math.sqrt(1 - a * a) * noise[:1]
    image = keras.ops.convert_to_numpy(klvae.decode_scaled(noisy))
    ax.imshow(np.clip(image[0, ..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"sqrt(abar)={a}", fontsize=8)
    ax.axis("off")
plt.suptitle("a digit's KL latent under the forward diffusion process", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# The digit fades into texture: at full noise, the decoded image is what the KL-VAE makes
# of a random Gaussian latent, which is not a digit. The diffusion model's job is to walk
# that path backwards. (vqkeras provides the first stage; the diffusion model is not part
# of this library.)
#
# With integer codes there is no such path: adding noise to a code vector and snapping
# back to the codebook gives the same code or a different one, nothing in between.
# Diffusion over discrete tokens exists (masking or replacing tokens), but it is a
# different process.
#
# ## Interpolating between two digits
#
# Take two digits $a$ and $b$ and walk from one latent to the other, $z(t) = (1-t)\,z_a +
# t\, z_b$:
#
# - **KL**: decode $z(t)$ between the two posterior means;
# - **VQ**: interpolate the encoder outputs *before* quantization, then snap to the
#   nearest codes and decode. The decoder only ever sees codebook vectors, so the image
#   changes when positions switch code, in jumps.

# %%
a_index = int(np.flatnonzero(mnist_y == 3)[0])
b_index = int(np.flatnonzero(mnist_y == 7)[0])
pair = mnist_x[[a_index, b_index]]
ts = np.linspace(0.0, 1.0, 9)

kl_means = keras.ops.convert_to_numpy(klvae.encode(pair).mode())
kl_path = np.stack([(1 - t) * kl_means[0] + t * kl_means[1] for t in ts])
kl_images = keras.ops.convert_to_numpy(klvae.decode(kl_path))

vqvae = models["vqvae_mnist"]
z_e = keras.ops.convert_to_numpy(vqvae.encoder(vqvae.encoder_inputs(pair)))
vq_path = np.stack([(1 - t) * z_e[0] + t * z_e[1] for t in ts])
vq_codes = keras.ops.convert_to_numpy(vqvae.quantizer.nearest_indices(vq_path))
vq_images = keras.ops.convert_to_numpy(vqvae.decode_indices(vq_codes))

fig, axes = plt.subplots(2, len(ts), figsize=(1.3 * len(ts), 3))
for c, t in enumerate(ts):
    for r, batch in enumerate((kl_images, vq_images)):
        axes[r, c].imshow(np.clip(batch[c, ..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[0, c].set_title(f"t={t:.2f}", fontsize=8)
axes[0, 0].set_ylabel("KL")
axes[1, 0].set_ylabel("VQ")
plt.tight_layout()
plt.show()

changed = [int(np.sum(vq_codes[i] != vq_codes[i - 1])) for i in range(1, len(ts))]
kl_steps = [float(np.mean(np.abs(kl_images[i] - kl_images[i - 1]))) for i in range(1, len(ts))]
vq_steps = [float(np.mean(np.abs(vq_images[i] - vq_images[i - 1]))) for i in range(1, len(ts))]
print("VQ: codes (of 49) that change at each step:", changed)
print("mean pixel change per step, KL:", np.round(kl_steps, 3))
print("mean pixel change per step, VQ:", np.round(vq_steps, 3))

# %% [markdown]
# Both paths pass through images that are neither digit: a straight line between two
# latents is not a path through "digit space" for either model, since neither was trained
# to make the space between two images meaningful. The KL path changes the image by
# small, even steps; the VQ path changes it only where codes switch, and the size of a
# step depends on how many of the 49 positions switch there.
#
# ## Generating needs a second model
#
# Decode what each latent space offers without a second model: random Gaussian latents
# (rescaled by `decode_scaled`) for the KL-VAE, and uniformly random codes for the
# VQ-VAE. Then the VQ-VAE with its prior: the PixelCNN samples a code grid for a
# requested digit.

# %%
rng = np.random.default_rng(0)
kl_random = klvae.decode_scaled(keras.random.normal((8, 7, 7, 4), seed=1))
vq_random = vqvae.decode_indices(rng.integers(0, 128, size=(8, 7, 7)).astype("int32"))
vq_prior = vqvae.decode_indices(prior.sample(8, labels=np.arange(8), seed=0))
fig, axes = plt.subplots(3, 8, figsize=(8, 3.4))
for r, (name, batch) in enumerate(
    (("KL, N(0, I)", kl_random), ("VQ, random codes", vq_random), ("VQ + prior, 0-7", vq_prior))
):
    for c, image in enumerate(keras.ops.convert_to_numpy(batch)):
        axes[r, c].imshow(np.clip(image[..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# | | VQ (integer tokens) | KL (continuous, near-Gaussian) |
# |---|---|---|
# | latent | $h \times w$ integers in $[0, K)$ | $h \times w \times c$ floats |
# | size | exactly $hw\log_2 K$ bits, less with a prior | the KL, here thousands of bits |
# | second stage | autoregressive: PixelCNN, Transformer (cross-entropy, exact likelihood) | diffusion (denoising, continuous noise) |
# | interpolation | jumps as codes switch | smooth |
# | typical trade-off | fixed, small bit budget: fine texture lost first | near-lossless first stage |
#
# ## What to try next
#
# - Interpolate the VQ latents *without* snapping (`vqvae.decode(vq_path)`): the decoder
#   sees vectors it was never trained on. How do the images look?
# - Repeat the interpolation with CIFAR-10 images and `vqvae_cifar10` / `klvae_cifar10`.
# - Tutorial 6 samples from the PixelCNN prior in detail; tutorial 7 exports the token
#   grids for a downstream model.
