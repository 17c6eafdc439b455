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
# # 5. More codes per image: RQ-VAE and VQ-VAE-2
#
# A VQ-VAE with a 7x7 grid and $K$ codes spends $49 \log_2 K$ bits per image. To spend
# more, you could enlarge the codebook, but bits grow only as $\log_2 K$: doubling them
# means squaring $K$. Two designs add codes more cleverly:
#
# - **RQ-VAE** (residual quantization) stacks $d$ codes at each grid position, each one
#   quantizing what the previous ones missed: coarse to fine, from $d$ small codebooks;
# - **VQ-VAE-2** uses two grids: a coarse *top* grid for the global shape and a finer
#   *bottom* grid, chosen knowing the top, for local detail.
#
# You will train a small one of each on MNIST, decode RQ codes level by level (coarse to
# fine), and look at the two code grids of VQ-VAE-2 and what each level carries.
#
# **Quick and full mode.** `VQKERAS_TUTORIAL_QUICK=1` (the default) trains on 192 of the
# 256 MNIST test images shipped with vqkeras, offline, in a minute or two on a CPU; the
# models are undertrained and the figures only show the trends. `VQKERAS_TUTORIAL_QUICK=0`
# downloads MNIST (`keras.datasets.mnist.load_data()`) and trains on all 60000 training
# images. For figures measured on full training, see the RQ-VAE rows of
# [docs/families.md](../docs/families.md).

# %%
import math
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer
from vqkeras.models import VQVAE2
from vqkeras.models.factory import build_autoencoder
from vqkeras.validation import to_unit_range

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test = images[:192], images[192:]
    EPOCHS, BATCH_SIZE, CHANNELS, NUM_CODES, RESTART = 20, 16, (16, 32), 64, 20
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS, NUM_CODES, RESTART = 5, 128, (32, 64), 128, 100
CODE_DIM, DEPTH = 16, 4


def psnr_db(images, reconstructions):
    """Mean over images of -10 log10 MSE, reconstructions clipped to [0, 1], as in the zoo."""
    return vqkeras.evaluation.reconstruction_metrics(images, reconstructions)["psnr_db"]


def show_rows(rows, titles=None):
    """A grid of grayscale images: one row per (label, batch) pair."""
    cols = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.2 * cols, 1.25 * len(rows)))
    for r, (label, batch) in enumerate(rows):
        for c, image in enumerate(np.asarray(batch)):
            axes[r, c].imshow(np.clip(image[..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", fontsize=8)
    plt.tight_layout()
    plt.show()


# %% [markdown]
# ## RQ-VAE: a stack of codes per position
#
# The encoder gives a vector $z$ at each position. Residual quantization picks $d$ codes
# greedily, level $l$ quantizing the residual left by the levels before it:
#
# $$r_0 = z, \qquad k_l = \arg\min_j \lVert r_l - e^{(l)}_j \rVert^2, \qquad
#   r_{l+1} = r_l - e^{(l)}_{k_l}, \qquad \hat z = \sum_{l<d} e^{(l)}_{k_l}.$$
#
# Each position now holds a stack of $d$ integers, $d\,\log_2 K$ bits, and the number of
# distinct vectors $\hat z$ can reach $K^d$. The commitment loss sums the error of every
# partial sum (RQ-VAE, eq. 6), $\beta \sum_l \lVert z - \mathrm{sg}[\sum_{m\le l}
# e^{(m)}_{k_m}]\rVert^2$, so every prefix of the stack is pushed to be a good
# approximation.
#
# `build_autoencoder("rqvae", ...)` builds one with an EMA codebook per level (restarts
# and first-batch initialization on), from the same encoder and decoder sizes as the other
# tutorials.

# %%
keras.utils.set_random_seed(0)
rqvae = build_autoencoder(
    "rqvae",
    (28, 28, 1),
    latent_dim=CODE_DIM,
    channels=CHANNELS,
    num_embeddings=NUM_CODES,
    depth=DEPTH,
)
rqvae.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
rq_history = rqvae.fit(x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0).history
print("last epoch:", {k: round(v[-1], 3) for k, v in rq_history.items()})

# %% [markdown]
# The logs hold a perplexity and a usage per level (`perplexity_0`, ...,
# `codebook_usage_0`, ...). `encode_indices` returns `(batch, 7, 7, depth)` codes, and
# `decode_indices` accepts any prefix `codes[..., :k]`: the decoded sum of the first $k$
# levels.

# %%
codes = vqkeras.evaluation.encode_indices(rqvae, x_test)  # int32 (N, 7, 7, DEPTH)
print("codes", codes.shape, "; the stack at position (3, 3) of the first image:", codes[0, 3, 3])
by_depth = [psnr_db(x_test, rqvae.decode_indices(codes[..., :k])) for k in range(1, DEPTH + 1)]
print("held-out PSNR by decoded depth:", [f"{p:.2f}" for p in by_depth])

# %% [markdown]
# Coarse to fine: the same digits decoded from the first 1, 2, 3 and 4 levels of their
# codes.

# %%
shown = x_test[:8]
shown_codes = codes[:8]
show_rows(
    [("input", to_unit_range(shown))]
    + [
        (
            f"{k} level{'s' * (k > 1)}",
            keras.ops.convert_to_numpy(rqvae.decode_indices(shown_codes[..., :k])),
        )
        for k in range(1, DEPTH + 1)
    ]
)

# %%
bits_per_level = math.prod(shown_codes.shape[1:3]) * math.log2(NUM_CODES)
depths = np.arange(1, DEPTH + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].plot(depths * bits_per_level, by_depth, marker="o")
for k, value in enumerate(by_depth, start=1):
    axes[0].annotate(f"{k} level{'s' * (k > 1)}", (k * bits_per_level, value), fontsize=8)
axes[0].set_xlabel("bits per image (decoded levels x 49 x log2 K)")
axes[0].set_ylabel("held-out PSNR (dB)")
for level in range(DEPTH):
    axes[1].plot(
        np.arange(1, EPOCHS + 1), rq_history[f"perplexity_{level}"], label=f"level {level}"
    )
axes[1].set_xlabel("epoch")
axes[1].set_ylabel(f"perplexity (of K={NUM_CODES})")
axes[1].set_title("RQ-VAE: code perplexity per level")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for:
#
# - **Each level refines.** Decoding more levels raises the PSNR, by less and less: each
#   level quantizes a smaller residual.
# - **Every level is used.** The per-level perplexities show that the deep levels use
#   their codebooks too: the residuals they quantize are small, but not noise.
# - **Prefixes are not trained for directly.** The decoder has only ever seen the full
#   sum, so a short prefix can decode worse than a plain VQ-VAE with the same bits
#   (docs/families.md measures this on full training). *Quantize dropout* (SoundStream) fixes that: with
#   `ResidualVectorQuantizer(..., quantize_dropout=True)`, each training batch uses only
#   its first $n$ levels, $n$ drawn from $1..d$, so every prefix is trained to decode well.
# - In quick mode the model is far from converged: compare the shape of the curve more
#   than its values. [docs/families.md](../docs/families.md) measures a 4-level RQ-VAE
#   and a VQ-VAE trained on all of MNIST, depth by depth.
#
# ## VQ-VAE-2: two grids
#
# VQ-VAE-2 encodes an image twice over. A bottom encoder makes features at the bottom
# resolution; a top encoder downsamples them again, and the top quantizer turns them into
# the coarse top grid. The decoded top grid is then concatenated with the bottom features,
# and the bottom quantizer encodes *that*: the bottom codes are chosen knowing the top, so
# they carry what the top missed. The decoder sees both grids.
#
# Which level ends up carrying what is not fixed by the design. If the bottom grid alone
# has enough bits to describe the image, the model has no reason to use the top one. So
# we train two VQ-VAE-2s: one with the same codebook size at both levels, and one whose
# bottom codebook is small (4 codes of size 4, 2 bits per position), so the bottom cannot
# do the job alone. With one stride-2 convolution in the bottom encoder, a 28x28 digit
# gets a 14x14 bottom grid and, one more stride-2 convolution up, a 7x7 top grid.


# %%
def make_vqvae2(bottom_codes, bottom_dim):
    keras.utils.set_random_seed(0)
    width = CHANNELS[-1]

    def quantizer(codes, dim, seed):
        return EMAVectorQuantizer(
            codes, dim, restart_after_steps=RESTART, init_from_first_batch=True, seed=seed
        )

    return VQVAE2(
        bottom_encoder=ConvEncoder(width, channels=(width,), num_residual_blocks=1),  # 28 -> 14
        top_encoder=ConvEncoder(CODE_DIM, channels=(width,), num_residual_blocks=1),  # 14 -> 7
        top_decoder=ConvDecoder(width, channels=(width,), num_residual_blocks=1),  # 7 -> 14
        decoder=ConvDecoder(1, channels=(width,), num_residual_blocks=1),  # 14 -> 28
        bottom_quantizer=quantizer(bottom_codes, bottom_dim, seed=0),
        top_quantizer=quantizer(NUM_CODES, CODE_DIM, seed=1),
    )


vqvae2_models = {
    f"bottom K={NUM_CODES}": make_vqvae2(NUM_CODES, CODE_DIM),
    "bottom K=4": make_vqvae2(4, 4),
}
for name, model in vqvae2_models.items():
    model.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
    model.fit(x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    r = vqkeras.evaluation.evaluate_reconstructions(model, x_test)
    print(
        f"{name:12s} PSNR {r['psnr_db']:.2f} dB; top grid {r['top_latent_grid']} "
        f"(perplexity {r['top_perplexity']:.1f}), bottom grid {r['bottom_latent_grid']} "
        f"(perplexity {r['bottom_perplexity']:.1f}); {r['bits_per_image']:.0f} bits per image"
    )

# %% [markdown]
# The two code grids of a few digits (model with the small bottom codebook), and the
# reconstructions decoded from them (`decode_indices` takes the dict that
# `encode_indices` gives; `code_grids()` describes the grids):

# %%
vqvae2 = vqvae2_models["bottom K=4"]
grids = vqkeras.evaluation.encode_indices(vqvae2, shown)  # {"top": (8, 7, 7), "bottom": ...}
decoded = keras.ops.convert_to_numpy(vqvae2.decode_indices(grids))
fig, axes = plt.subplots(4, 8, figsize=(10, 5.4))
for c in range(8):
    axes[0, c].imshow(shown[c, ..., 0], cmap="gray")
    axes[1, c].imshow(grids["top"][c], cmap="tab20", vmin=0, vmax=NUM_CODES - 1)
    axes[2, c].imshow(
        grids["bottom"][c], cmap="tab20", vmin=0, vmax=vqvae2.bottom_quantizer.num_embeddings - 1
    )
    axes[3, c].imshow(np.clip(decoded[c, ..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
for r, name in enumerate(("input", "top codes", "bottom codes", "decoded")):
    axes[r, 0].set_ylabel(name, fontsize=8)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ### What each level carries
#
# Replace one level's codes by a constant grid (its most frequent code over the held-out
# images) and decode: what is left shows what the other level carries on its own. Both
# models:


# %%
def level_ablation(model, images):
    """PSNR from both grids, from the top grid alone and from the bottom grid alone."""
    grids = vqkeras.evaluation.encode_indices(model, images)
    flat = {
        level: np.full_like(grid, np.bincount(grid.ravel()).argmax())
        for level, grid in grids.items()
    }
    return {
        "both levels": model.decode_indices(grids),
        "top only": model.decode_indices({"top": grids["top"], "bottom": flat["bottom"]}),
        "bottom only": model.decode_indices({"top": flat["top"], "bottom": grids["bottom"]}),
    }


for name, model in vqvae2_models.items():
    variants = level_ablation(model, x_test)
    print(
        f"{name:12s}",
        "  ".join(f"{k}: {psnr_db(x_test, v):5.2f} dB" for k, v in variants.items()),
    )
variants = level_ablation(vqvae2, shown)
show_rows(
    [("input", to_unit_range(shown))]
    + [(name, keras.ops.convert_to_numpy(batch)) for name, batch in variants.items()]
)

# %% [markdown]
# How to read this:
#
# - With the same $K$ at both levels, compare "bottom only" with "both levels": the bottom
#   grid, with four times the positions of the top, can carry nearly the whole image,
#   and the top grid adds little. A hierarchy alone does not force a division of labour.
# - With the small bottom codebook, removing the top costs much more: the top grid now
#   carries part of the image that the bottom cannot.
# - The decoder was trained only on matching pairs of grids, so a constant grid is out
#   of distribution: neither ablated row is a clean "coarse" or "fine" image, and "top
#   only" is mostly dark. In the VQ-VAE-2 paper (256x256 images) the top grid, with its
#   large receptive field, holds global structure; one prior generates the top grid and
#   a second fills in the bottom grid given the top.
#
# ## What to try next
#
# - Train the RQ-VAE with `shared_codebook=True` (one codebook for every level, as in
#   the RQ-VAE paper) and compare the per-level perplexities.
# - Vary the bottom codebook of the VQ-VAE-2 (K = 2, 8, 16, 32) and plot how much of the
#   PSNR each level carries.
# - Build the RQ-VAE with `RQVAE` and a `ResidualVectorQuantizer(..., quantize_dropout=True)`
#   and compare the PSNR of each prefix with the model above.
# - For a prior over RQ codes, flatten the stack: `codes.reshape(n, 7 * 7 * depth)` is a
#   sequence four times longer (RQ-Transformer models depth separately; tutorial 7
#   exports such sequences).
