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
# # 9. Quantizers without a learned codebook: FSQ, LFQ and Gumbel
#
# Tutorial 4 showed a learned codebook collapsing: codes that no encoder output is near
# never learn, so they are never chosen. Three quantizers sidestep the nearest-code
# search on a learned codebook altogether. In this notebook you will:
#
# - round instead of searching: **finite scalar quantization** (FSQ) bounds each latent
#   channel and rounds it to a few levels, and the grid of those levels is the codebook;
#   you will redo its arithmetic in NumPy and see why it cannot collapse;
# - take the sign of each channel: **lookup-free quantization** (LFQ, MAGVIT-v2), and
#   measure what its entropy loss buys by training it with and without that loss;
# - relax the choice of a code into a differentiable sample: the **Gumbel-softmax**
#   quantizer of DALL-E's dVAE, whose temperature is annealed during training with
#   `GumbelTemperatureSchedule`;
# - train the same small autoencoder with each of them, and with a learned codebook for
#   comparison, and compare code usage, perplexity and PSNR on held-out digits.
#
# **Quick and full mode.** `VQKERAS_TUTORIAL_QUICK=1` (the default) trains on 192 of the
# 256 MNIST test images shipped with vqkeras, offline, in about a minute on a CPU.
# `VQKERAS_TUTORIAL_QUICK=0` downloads MNIST (`keras.datasets.mnist.load_data()`) and
# trains on all 60000 training images.

# %%
import os
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.callbacks import GumbelTemperatureSchedule
from vqkeras.layers import (
    ConvDecoder,
    ConvEncoder,
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    VectorQuantizer,
)
from vqkeras.models import VQVAE

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test = images[:192], images[192:]
    EPOCHS, BATCH_SIZE, CHANNELS = 15, 16, (16, 32)
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS = 5, 128, (32, 64)
# About 2^8 codes each: FSQ's (8, 6, 5) grid has 240, LFQ's 8 bits 256.
LEVELS, BITS, NUM_CODES, CODE_DIM = (8, 6, 5), 8, 256, 16
steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
print(f"{len(x_train)} training images, {steps_per_epoch} steps per epoch")

# %% [markdown]
# ## FSQ: round instead of search
#
# FSQ (Mentzer et al. 2023) quantizes each of a few latent channels on its own. Channel
# $i$ with $L_i$ levels is squeezed into an open interval of width $L_i$ by a scaled
# $\tanh$, then rounded to the nearest integer, with the straight-through estimator
# carrying the gradient past the rounding:
#
# $$\hat z_i = \mathrm{round}\Big(h_i \tanh(z_i + s_i) - o_i\Big), \qquad
#   h_i = \tfrac{(L_i - 1)(1 - \epsilon)}{2},$$
#
# where $o_i = \tfrac12$ for even $L_i$ (the levels are then half-integer shifted,
# $\{-L/2, \dots, L/2 - 1\}$) and 0 for odd $L_i$, and the shift $s_i$ puts $z = 0$ on
# (about) level 0. The code is $\hat z_i / \lfloor L_i/2 \rfloor$, in $[-1, 1]$. The
# levels of all channels form a grid of $\prod_i L_i$ points, and every point is a code:
# its index is the mixed-radix number whose digits are the channels' levels.
#
# Here is that arithmetic in NumPy, against the layer:

# %%
fsq = FiniteScalarQuantizer(LEVELS)
z = np.random.default_rng(0).normal(size=(1000, len(LEVELS))).astype("float32") * 2
out = fsq(z)

sizes = np.array(LEVELS, dtype="float32")
half_l = (sizes - 1) * (1 - 1e-3) / 2
offset = np.where(sizes % 2 == 0, 0.5, 0.0)
shift = np.tan(offset / half_l)
levels = np.round(half_l * np.tanh(z + shift) - offset)  # integers, per channel
codes = levels / (sizes // 2)
digits = levels + sizes // 2  # 0 .. L_i - 1
radix = np.cumprod([1, *LEVELS[:-1]])  # channel 0 the least significant digit
indices = (digits * radix).sum(axis=-1).astype("int64")

quantized = keras.ops.convert_to_numpy(out["quantized"])
print("largest difference from NumPy:", np.abs(quantized - codes).max())
print("indices equal:", np.array_equal(keras.ops.convert_to_numpy(out["indices"]), indices))
print(f"{fsq.num_embeddings} codes = {' x '.join(map(str, LEVELS))}")
print(f"z = {z[0].round(2)} -> levels {levels[0]} -> index {indices[0]}")

# %% [markdown]
# Each channel's staircase, for the 8 levels of channel 0 and the 5 of channel 2: the
# $\tanh$ bound keeps every latent inside the grid, so no value of $z$ is ever far from
# a code.

# %%
sweep = np.linspace(-4, 4, 801, dtype="float32")
grid = keras.ops.convert_to_numpy(fsq(np.repeat(sweep[:, None], len(LEVELS), axis=1))["quantized"])
fig, ax = plt.subplots(figsize=(6, 3.2))
for channel in (0, 2):
    ax.plot(sweep, grid[:, channel], label=f"channel {channel}: L = {LEVELS[channel]}")
ax.set_xlabel("latent z")
ax.set_ylabel("code value")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Why FSQ cannot collapse
#
# A learned codebook collapses because its codes move only when chosen, and a code far
# from the data is never chosen. FSQ has nothing to move: the grid is fixed, and the
# encoder's outputs are squeezed onto it. For a code to be unused, the encoder would
# have to avoid that combination of levels, and the decoder is free to give every
# combination a meaning. There is also no codebook or commitment loss to tune: FSQ adds
# no loss term at all, and the reconstruction loss alone trains the encoder.
#
# ## LFQ: one bit per channel, and an entropy loss
#
# LFQ (Yu et al. 2023, MAGVIT-v2) is FSQ's two-level extreme: each of `bits` channels is
# quantized to its sign, $\pm 1$, and the index is the bits as an integer, so $2^{bits}$
# codes come with no lookup at all. Signs alone leave the encoder free to put many
# positions on the same corner of the cube, so MAGVIT-v2 adds an entropy loss over soft
# assignments $p(c \mid z) = \mathrm{softmax}_c(-\lVert z - c\rVert^2)$ to the corners:
#
# $$\mathcal{L}_\text{entropy} = \mathbb{E}\big[H(p(c \mid z))\big] -
#   H\big(\mathbb{E}[p(c \mid z)]\big)$$
#
# The first term makes each position confident of its corner (latents far from the
# sign boundaries); the second, subtracted, rewards a batch that spreads over many
# corners. `LookupFreeQuantizer` computes it exactly for up to 12 bits and weights it
# with `entropy_weight` (0.1, as MAGVIT-v2). Below, the same model is trained with that
# weight and with 0.
#
# ## Gumbel-softmax: a differentiable choice of code
#
# DALL-E's dVAE predicts $K$ logits per position and samples a code from them. Sampling is
# not differentiable; the Gumbel-softmax relaxation (Jang et al. 2017) replaces the
# sample by $y = \mathrm{softmax}((\ell + g)/\tau)$ with Gumbel noise $g$: a point of the
# simplex that tends to a one-hot vector as the temperature $\tau$ goes to 0. The
# quantized vector is $y$ times a codebook. A high temperature gives smooth gradients
# and exploration; a low one gives samples close to the codes used at inference (the
# argmax). So $\tau$ is annealed during training, exponentially from 1 to 1/16 in
# DALL-E. The straight-through variant, used here, sends the argmax code forward and
# the gradient of $y$ backward. A small KL term to the uniform prior (`kl_loss`) keeps
# the logits from settling on a few codes.
#
# What the temperature does to one position's sample, from the same logits and noise:

# %%
rng = np.random.default_rng(1)
logits = rng.normal(size=16)
noise = -np.log(-np.log(rng.uniform(size=16)))
fig, axes = plt.subplots(1, 3, figsize=(12, 2.4), sharey=True)
for ax, tau in zip(axes, (1.0, 0.25, 1 / 16)):
    scaled = (logits + noise) / tau
    sample = np.exp(scaled - scaled.max())
    ax.bar(np.arange(16), sample / sample.sum())
    ax.set_title(f"temperature {tau:g}: largest weight {sample.max() / sample.sum():.2f}")
    ax.set_xlabel("code")
axes[0].set_ylabel("weight in the sample")
plt.tight_layout()
plt.show()

# %% [markdown]
# `GumbelTemperatureSchedule(decay_steps)` is a Keras callback: before each training step
# it sets the temperature of every `GumbelQuantizer` of the model, decaying exponentially
# from `initial_temperature` to `final_temperature` over `decay_steps` steps, then holding
# it. It counts steps with the optimizer, so a second `fit` (or a resumed run) continues
# the schedule where it stopped. Here it anneals over the whole run:

# %%
schedule = GumbelTemperatureSchedule(decay_steps=EPOCHS * steps_per_epoch)
steps = np.arange(EPOCHS * steps_per_epoch + 1)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(steps, [schedule.temperature(step) for step in steps])
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("temperature")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Five runs that differ only in the quantizer
#
# Same seed, encoder, decoder and optimizer; each encoder outputs as many channels as its
# quantizer takes (3 for FSQ's three levels, 8 for LFQ's bits, 16 for the codebooks).
# The learned codebook of 256 codes is the collapsing baseline of tutorial 4.

# %%
runs = {
    "VQ, learned codebook": lambda: (VectorQuantizer(NUM_CODES, CODE_DIM), CODE_DIM, []),
    "FSQ (8, 6, 5)": lambda: (FiniteScalarQuantizer(LEVELS), len(LEVELS), []),
    "LFQ, entropy 0.1": lambda: (LookupFreeQuantizer(BITS, entropy_weight=0.1), BITS, []),
    "LFQ, no entropy": lambda: (LookupFreeQuantizer(BITS, entropy_weight=0.0), BITS, []),
    "Gumbel, annealed": lambda: (
        GumbelQuantizer(NUM_CODES, CODE_DIM, straight_through=True, seed=0),
        CODE_DIM,
        [GumbelTemperatureSchedule(decay_steps=EPOCHS * steps_per_epoch)],
    ),
}
models, histories, seconds = {}, {}, {}
for name, make in runs.items():
    keras.utils.set_random_seed(0)
    quantizer, latent_dim, callbacks = make()
    model = VQVAE(
        encoder=ConvEncoder(latent_dim, channels=CHANNELS, num_residual_blocks=1),
        decoder=ConvDecoder(1, channels=CHANNELS[::-1], num_residual_blocks=1),
        quantizer=quantizer,
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
    start = time.time()
    histories[name] = model.fit(
        x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, callbacks=callbacks, verbose=0
    ).history
    seconds[name] = time.time() - start
    models[name] = model
    print(f"{name:22s} {seconds[name]:5.1f} s, loss terms: {', '.join(quantizer.loss_names)}")

# %% [markdown]
# ## On held-out images
#
# `evaluate_reconstructions` gives each model's PSNR and the statistics of its codes on
# the held-out digits: the share of the codes used, the perplexity (the number of
# equally frequent codes with the same entropy) and the bits a code grid takes stored
# as is, $\log_2 K$ per position.

# %%
results = {
    name: vqkeras.evaluation.evaluate_reconstructions(model, x_test)
    for name, model in models.items()
}
print(f"{'':22s} {'codes':>5s} {'PSNR':>8s} {'usage':>6s} {'perplexity':>10s} {'bits/image':>10s}")
for name, r in results.items():
    print(
        f"{name:22s} {models[name].quantizer.num_embeddings:5d} {r['psnr_db']:5.2f} dB "
        f"{r['codebook_usage']:6.1%} {r['perplexity']:10.1f} {r['bits_per_image']:10.0f}"
    )

# %% [markdown]
# How often each code is used, most used first:

# %%
fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 2.6), sharey=True)
for ax, (name, model) in zip(axes, models.items()):
    codes = vqkeras.evaluation.encode_indices(model, x_test).ravel()
    counts = np.bincount(codes, minlength=model.quantizer.num_embeddings)
    ax.bar(np.arange(len(counts)), np.sort(counts)[::-1], width=1.0)
    ax.set_title(f"{name}\n{np.mean(counts > 0):.1%} used", fontsize=9)
    ax.set_xlabel("codes, most used first")
axes[0].set_ylabel("count")
plt.tight_layout()
plt.show()

# %% [markdown]
# And the first held-out digits, with each model's reconstructions below them:

# %%
shown = x_test[:8]
rows = [shown] + [model.predict(shown, verbose=0) for model in models.values()]
fig, axes = plt.subplots(len(rows), 8, figsize=(8, 1.1 * len(rows)))
for row, (title, batch) in enumerate(zip(["held out", *models], rows)):
    for column in range(8):
        axes[row, column].imshow(np.squeeze(batch[column]), cmap="gray", vmin=0, vmax=255)
        axes[row, column].axis("off")
    axes[row, 0].set_title(title, fontsize=7, loc="left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the results
#
# - **FSQ** uses several times more of its codes than the learned codebook (40% to 70%
#   of its grid against 9% to 23%, over the seeds and backends we tried), with no
#   codebook, no restarts and no quantizer loss: the bound squeezes every latent onto
#   the grid, and nothing can fall out of use the way a far-away learned code does.
#   Its PSNR came out a little above the learned codebook's in every run we tried.
# - **LFQ** shows what its entropy loss buys most plainly: without it, the signs
#   settle on one or two corners of the cube for every position (usage near 0%,
#   perplexity near 1) and every digit gets the same blur; with it, the batch
#   spreads over the corners and the model reconstructs digits. The loss's other
#   half, the per-position confidence, pulls the latents away from zero, where a sign
#   flip would change the code.
# - **Gumbel** trails in quick mode, with few codes in use and the lowest PSNR of the
#   models that work: its gradient goes through a noisy relaxation of a 256-way
#   choice, and the temperature reaches 1/16 after only a few hundred steps (DALL-E
#   anneals over 150,000). A larger `kl_weight` (1e-2) pulls the usage up.
# - **PSNR**: in quick mode (a few hundred steps on 192 images) the learned codebook,
#   FSQ and LFQ with its entropy loss come within about 1.5 dB of each other, and their
#   order below FSQ changes with the seed; the usage differences,
#   and LFQ's collapse without the entropy loss, are the robust results. The bits per
#   image column is the price of a code grid stored as is: FSQ's 240 codes cost
#   slightly fewer bits than 256.
#
# For CIFAR-10 at the zoo's sizes, `benchmarks/quantizers_compared.py` compares an EMA
# codebook, FSQ, LFQ and Gumbel in one table (PSNR, SSIM, usage, perplexity, bits per
# image and training time).

# %% [markdown]
# ## What to try next
#
# - Give FSQ more levels, e.g. `(8, 5, 5, 5)` (1000 codes, the paper's choice for about
#   2^10), or fewer, and watch PSNR and bits per image trade off.
# - Train LFQ with more bits (12, 16): the entropy loss is then computed over groups of
#   bits (`group_bits`), and the codebook is too large to use fully on 64 digits.
# - Anneal the Gumbel temperature over only the first half of training
#   (`decay_steps=EPOCHS * steps_per_epoch // 2`), or not at all, or raise its
#   `kl_weight`, and compare usage and PSNR.
# - Train these quantizers with `vqkeras train --family fsq-vae` (or `lfq-vae`,
#   `gumbel-vae`) on your own images; for the learned codebook, tutorial 4's remedies and
#   the codebook options (`--kmeans-init`, `--normalize-codes`, `--code-dim`,
#   `--gradient-estimator rotation`) are in `docs/quantizers.md`.
