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
# # 1. From autoencoder to VAE to VQ-VAE
#
# An autoencoder squeezes an image through a small *latent* and rebuilds it. What that
# latent is allowed to be decides what the model is good for. In this notebook you will:
#
# - see the three kinds of latent side by side: a plain vector of floats (autoencoder),
#   a Gaussian distribution (VAE) and a grid of integer codes (VQ-VAE);
# - write down the loss terms each one trains on: reconstruction; KL for the VAE;
#   codebook and commitment, the latter weighted by `commitment_cost`, for the VQ-VAE;
# - train small ones on MNIST with the same encoder and decoder, and compare their
#   reconstructions, what their latents cost in bits, and what comes out when you decode a
#   *random* latent.
#
# **Quick and full mode.** The settings cell below reads the environment variable
# `VQKERAS_TUTORIAL_QUICK`. Quick mode (the default, `1`) trains tiny models on the 256
# MNIST test images shipped with vqkeras (`vqkeras.samples.load("mnist")`), needs no
# network and runs in a minute or two on a laptop CPU. Full mode (`VQKERAS_TUTORIAL_QUICK=0`)
# downloads MNIST with `keras.datasets.mnist.load_data()` and trains on all 60000 training
# images, which a GPU finishes in minutes.

# %%
import math
import os
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.models.factory import build_autoencoder
from vqkeras.validation import to_unit_range

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
keras.utils.set_random_seed(0)
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %% [markdown]
# ## The data
#
# Images go into vqkeras models as `uint8` in [0, 255] (or floats in [0, 1]), shaped
# `(batch, height, width, channels)`. In quick mode we keep 192 of the shipped images for
# training and hold out the other 64; in full mode we use the real splits.

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test = images[:192], images[192:]
    EPOCHS, BATCH_SIZE, CHANNELS = 20, 16, (16, 32)
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS = 5, 128, (32, 64)
print("train", x_train.shape, x_train.dtype, "test", x_test.shape)

# %% [markdown]
# ## Three latents, one network
#
# All models below share the same convolutional encoder $E$ (two stride-2 convolutions,
# 28x28 -> 7x7) and the mirrored decoder $D$. Only the bottleneck differs. Write $P$ for
# the number of pixel values of an image (784 for MNIST) and $\hat x$ for the
# reconstruction, on the [0, 1] scale.
#
# **Autoencoder (AE).** The latent is $z = E(x)$, a 7x7x$C$ grid of unconstrained floats.
# The decoder sees exactly that. The only loss is the reconstruction error
#
# $$\mathcal{L}_\text{AE} = \tfrac{1}{P}\lVert x - D(E(x)) \rVert^2 .$$
#
# Nothing says what the latents of *other* images look like, so there is no sensible way
# to pick a new latent and decode it.
#
# **Variational autoencoder (VAE).** The encoder outputs a mean $\mu(x)$ and a
# log-variance $\log\sigma^2(x)$ per latent value: a Gaussian $q(z\mid x)$. In training
# the decoder sees a draw $z = \mu + \sigma \odot \varepsilon$, $\varepsilon \sim
# \mathcal{N}(0, I)$ (the *reparameterization trick*, which lets gradients reach $\mu$ and
# $\sigma$). A KL term pulls every $q(z\mid x)$ towards the prior $\mathcal{N}(0, I)$:
#
# $$\mathcal{L}_\text{VAE} = \tfrac{1}{P}\lVert x - D(z) \rVert^2
#   + \beta\,\tfrac{1}{P}\,\mathrm{KL}\big(q(z\mid x)\,\Vert\,\mathcal{N}(0, I)\big),
# \qquad
# \mathrm{KL} = \tfrac12 \sum_i \big(\mu_i^2 + \sigma_i^2 - 1 - \log \sigma_i^2\big).$$
#
# The KL, in nats, is the information the latent carries about the image. $\beta$ (the
# VAE's `kl_weight`) sets its price: with $\beta = 1$ this loss is the negative ELBO for a
# Gaussian pixel likelihood of variance 1/2, which makes bits expensive and reconstructions
# blurry; a small $\beta$ buys sharper images with more bits. The logs call the weighted
# term `kl_loss` and the raw KL per image `kl`.
#
# **VQ-VAE.** The latent is a grid of *integers*. A codebook holds $K$ vectors
# $e_1, \dots, e_K$ of size $D$. Each encoder output vector $z_e$ is replaced by its
# nearest code, $z_q = e_k$ with $k = \arg\min_j \lVert z_e - e_j \rVert^2$, and the
# decoder sees $z_q$. The argmin has no gradient, so the *straight-through estimator*
# copies the decoder's gradient from $z_q$ to $z_e$. With $\mathrm{sg}[\cdot]$ the
# stop-gradient:
#
# $$\mathcal{L}_\text{VQ} = \tfrac{1}{P}\lVert x - D(z_q) \rVert^2
#   + \underbrace{\lVert \mathrm{sg}[z_e] - e_k \rVert^2}_\text{codebook}
#   + \beta\,\underbrace{\lVert z_e - \mathrm{sg}[e_k] \rVert^2}_\text{commitment}.$$
#
# The codebook term moves the chosen code towards the encoder output; the commitment term
# (weight $\beta$, the quantizer's `commitment_cost`, 0.25 by default) keeps the encoder
# close to its code, so that its outputs do not drift away from the codebook. An image
# then *is* 49 integers in $[0, K)$: $49 \log_2 K$ bits.
#
# `build_autoencoder` builds each family from the same sizes.

# %%
LATENT_CHANNELS = 4  # floats per position of the continuous latents
CODE_DIM, NUM_CODES = 16, 64 if QUICK else 128  # VQ-VAE: D and K

models = {
    "AE": build_autoencoder("ae", (28, 28, 1), latent_dim=LATENT_CHANNELS, channels=CHANNELS),
    "VAE (kl_weight=1)": build_autoencoder(
        "vae", (28, 28, 1), latent_dim=LATENT_CHANNELS, channels=CHANNELS, kl_weight=1.0
    ),
    "VAE (kl_weight=0.02)": build_autoencoder(
        "vae", (28, 28, 1), latent_dim=LATENT_CHANNELS, channels=CHANNELS, kl_weight=0.02
    ),
    # "vqvae" is the codebook learned by gradients, with the loss above.
    "VQ-VAE": build_autoencoder(
        "vqvae", (28, 28, 1), latent_dim=CODE_DIM, channels=CHANNELS, num_embeddings=NUM_CODES
    ),
}
for name, model in models.items():
    print(f"{name:16s} {type(model).__name__:12s} {model.count_params():7,d} parameters")

# %% [markdown]
# What the encoder of each model hands to the decoder, for one image:

# %%
one = x_test[:1]
ae_latent = models["AE"].encode(one)
posterior = models["VAE (kl_weight=1)"].encode(one)  # a DiagonalGaussian
codes = models["VQ-VAE"].encode_indices(one)
print("AE latent:       ", tuple(ae_latent.shape), "floats")
print("VAE posterior:   ", "mean", tuple(posterior.mean.shape), "and log-variance of that shape")
print("VQ-VAE code grid:", tuple(codes.shape), keras.backend.standardize_dtype(codes.dtype))

# %% [markdown]
# ## Training
#
# Each model is a `keras.Model` whose training step lives in the model: `compile` with an
# optimizer and `fit` on the images alone. Every loss term appears by name in the history.

# %%
histories, seconds = {}, {}
for name, model in models.items():
    model.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
    start = time.time()
    history = model.fit(
        x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, validation_data=(x_test,), verbose=0
    )
    seconds[name] = time.time() - start
    histories[name] = history.history
    terms = {k: round(v[-1], 4) for k, v in history.history.items() if not k.startswith("val_")}
    print(f"{name:16s} {seconds[name]:5.1f} s  last epoch: {terms}")

# %% [markdown]
# The loss terms over the epochs (log scale). Two things to look for:
#
# - the VAEs' `kl_loss` *rises* while their reconstruction loss falls: the model starts
#   with a latent that says nothing about the image, and pays KL for each detail it lets
#   through;
# - the VQ-VAE's `codebook_loss` and `commitment_loss` measure the distance between the
#   encoder outputs and their codes. They need not fall to zero: the encoder keeps moving
#   while it learns, and the codes follow it.

# %%
fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3))
for ax, (name, history) in zip(axes, histories.items()):
    for key in models[name].loss_names:
        ax.plot(np.arange(1, EPOCHS + 1), history[key], label=key)
    ax.set_yscale("log")
    ax.set_title(name)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reconstructions
#
# `vqkeras.evaluation.evaluate_reconstructions` measures every model the same way: MSE per
# pixel value, PSNR ($-10 \log_{10}$ of each image's MSE, averaged over images; higher is
# better) and SSIM (structural similarity, 1 is perfect), on the held-out images. The VAEs
# are measured on the decoded posterior mean.

# %%
results = {
    name: vqkeras.evaluation.evaluate_reconstructions(model, x_test)
    for name, model in models.items()
}
for name, r in results.items():
    print(f"{name:16s} MSE {r['mse']:.5f}  PSNR {r['psnr_db']:5.2f} dB  SSIM {r['ssim']:.3f}")

# %%
shown = x_test[:8]
# Calling a model on images returns its reconstructions (the VAEs decode the posterior mean).
rows = [to_unit_range(shown)] + [
    np.clip(keras.ops.convert_to_numpy(m(shown)), 0, 1) for m in models.values()
]
names = ["input", *models]
fig, axes = plt.subplots(len(rows), len(shown), figsize=(len(shown), 1.1 * len(rows)))
for r, (row, name) in enumerate(zip(rows, names)):
    for c, image in enumerate(row):
        axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What each latent costs in bits
#
# A fair comparison counts how much information the latent holds, not how much memory it
# takes:
#
# - the AE latent is 7x7x4 float32 numbers: nothing bounds their precision, so the only
#   honest figure is the storage size, 32 bits per float;
# - a VAE latent carries $\mathrm{KL}(q(z\mid x)\Vert p(z))$ nats, the cost of sending a
#   posterior sample under the prior (divide by $\ln 2$ for bits);
# - a VQ-VAE code grid is $49 \log_2 K$ bits as stored, and
#   $49 \log_2(\text{perplexity})$ with an ideal entropy coder for the code frequencies
#   (perplexity $= e^{H}$ of the code histogram).

# %%
ae_floats = math.prod(models["AE"].encode(x_test[:1]).shape[1:])
print(f"AE               {ae_floats * 32:6.0f} bits as float32 ({ae_floats} floats)")
for name in ("VAE (kl_weight=1)", "VAE (kl_weight=0.02)"):
    kl_nats = np.mean(keras.ops.convert_to_numpy(models[name].encode(x_test).kl()))
    print(f"{name:16s} {kl_nats / math.log(2):6.0f} bits of KL ({kl_nats:.1f} nats)")
vq = results["VQ-VAE"]
cells = math.prod(vq["latent_grid"])
print(
    f"VQ-VAE           {vq['bits_per_image']:6.0f} bits as codes, "
    f"{cells * math.log2(vq['perplexity']):.0f} entropy-coded; "
    f"{vq['codebook_usage']:.0%} of the {NUM_CODES} codes used"
)

# %% [markdown]
# ## Decoding a random latent
#
# A generative model must be able to produce a latent without an image. Decode latents
# drawn from $\mathcal{N}(0, I)$ for the AE and the VAEs, and uniformly random code grids
# for the VQ-VAE:
#
# - the VAE with $\beta = 1$ was trained so that its latents look like $\mathcal{N}(0, I)$
#   draws: its samples are blurry digit-like shapes;
# - the AE and the low-$\beta$ VAE were never asked to fill that distribution: their
#   samples are mostly noise or texture;
# - uniformly random codes are not digits either: which codes follow which is the
#   structure of the data. A *prior* over code grids learns it (tutorial 6).

# %%
noise = keras.random.normal((8, 7, 7, LATENT_CHANNELS), seed=1)
random_codes = np.random.default_rng(1).integers(0, NUM_CODES, size=(8, 7, 7)).astype("int32")
samples = {
    "AE": models["AE"].decode(noise),
    "VAE (kl_weight=1)": models["VAE (kl_weight=1)"].decode(noise),
    "VAE (kl_weight=0.02)": models["VAE (kl_weight=0.02)"].decode(noise),
    "VQ-VAE": models["VQ-VAE"].decode_indices(random_codes),
}
fig, axes = plt.subplots(len(samples), 8, figsize=(8, 1.1 * len(samples)))
for r, (name, batch) in enumerate(samples.items()):
    for c, image in enumerate(np.clip(keras.ops.convert_to_numpy(batch), 0, 1)):
        axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How this compares with well-trained models
#
# In quick mode the models saw 192 images for a few hundred steps, so the figures above
# are far from what these families reach: read them as a sketch of the trends, not as
# measurements. The zoo holds models trained on all of MNIST, and each model card records
# its test-split figures. Their metadata, read here:

# %%
for preset in ("vqvae_mnist", "klvae_mnist"):
    card = vqkeras.zoo.info(preset)["metrics"]
    print(
        f"{preset:12s} PSNR {card['psnr_db']:.2f} dB, SSIM {card['ssim']:.3f} "
        f"on {card['images']} test images"
    )

# %% [markdown]
# [docs/families.md](../docs/families.md) trains AE, VAE, KL-VAE, VQ-VAE and RQ-VAE for
# five full epochs each, with the same network, and discusses where blur comes from.
#
# ## What to try next
#
# - Sweep the VAE's `kl_weight` (1, 0.1, 0.01, 0.001) and plot PSNR against the KL in bits:
#   that curve is the rate-distortion trade-off.
# - Change the VQ-VAE's codebook size `num_embeddings` (16, 64, 512): bits per image grow
#   as $\log_2 K$; does PSNR follow?
# - Replace `"vqvae"` by `"ema-vqvae"` (codebook by moving averages, no codebook loss)
#   and compare the codebook usage: tutorial 4 is about that.
# - Tutorial 2 takes the VQ-VAE apart step by step.
