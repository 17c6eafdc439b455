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
# # 7. Images as tokens
#
# A trained VQ model is a tokenizer for images: it turns each image into a short sequence
# of integers from a fixed vocabulary, and back. Anything that models sequences (a
# PixelCNN, a Transformer, a plain n-gram counter) can then work on images. In this
# notebook you will:
#
# - export the code grids of a set of images, from Python (`encode_indices`) and from the
#   command line (`vqkeras export-latents`), and check that they agree;
# - lay the grids out as token sequences a downstream model can read, and decode them
#   back;
# - count what an image costs in bits, three ways (stored codes, entropy-coded codes, a
#   prior's code length), and set that against reconstruction quality, for the zoo models
#   and for a small RQ-VAE whose depth you can cut.
#
# **Quick and full mode.** Quick mode (`VQKERAS_TUTORIAL_QUICK=1`, the default) uses the
# 256 MNIST test images shipped with vqkeras, offline, and trains the small RQ-VAE on 192
# of them: its figures only show trends. Full mode (`VQKERAS_TUTORIAL_QUICK=0`) downloads
# MNIST (`keras.datasets.mnist.load_data()`), measures on the whole test split and trains
# the RQ-VAE on the 60000 training images.

# %%
import json
import math
import os
import subprocess
import sys
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.models.factory import build_autoencoder

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test, y_test = images[:192], images[192:], labels[192:]
    EPOCHS, BATCH_SIZE, CHANNELS, RESTART = 20, 16, (16, 32), 20
else:
    (x_train, _), (x_test, y_test) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS, RESTART = 5, 128, (32, 64), 100
vqvae = vqkeras.from_preset("vqvae_mnist")
K = vqvae.num_embeddings
print("test images", x_test.shape, "| vqvae_mnist codebook K =", K)

# %% [markdown]
# ## Exporting code grids
#
# `encode_indices` maps a batch of images to int32 grids; `vqkeras.evaluation.encode_indices`
# does the same over a large array in batches and returns one NumPy array.

# %%
codes = vqkeras.evaluation.encode_indices(vqvae, x_test)  # int32 (N, 7, 7)
print(codes.shape, codes.dtype, "values in", [int(codes.min()), int(codes.max())])

# %% [markdown]
# The command line does the same for folders of PNG/JPEG files, `.npz` arrays or the
# shipped samples, and writes the grids with their labels to `.npz`, `.npy` or `.jsonl`,
# with a picture of the first images and their grids beside the file. Here it runs as a
# subprocess, on the shipped sample, into a temporary folder:

# %%
workdir = tempfile.mkdtemp(prefix="vqkeras_tokens_")
codes_path = os.path.join(workdir, "codes.npz")
command = [sys.executable, "-m", "vqkeras.apps", "export-latents", "--model", "vqvae_mnist"]
command += ["--input", "sample:mnist", "--out", codes_path, "--quiet"]
completed = subprocess.run(command, capture_output=True, text=True, check=True)
summary = json.loads(completed.stdout)  # every command prints a JSON summary
print({key: summary[key] for key in ("model", "input", "images", "codes", "format")})

with np.load(codes_path, allow_pickle=False) as exported:
    exported_codes, exported_labels = exported["indices"], exported["labels"]
sample_images, sample_labels = vqkeras.samples.load("mnist")
in_python = vqkeras.evaluation.encode_indices(vqvae, sample_images)
print(
    f"{exported_codes.shape} grids from the command line; equal to encode_indices at "
    f"{np.mean(exported_codes == in_python):.2%} of the positions; labels kept: "
    f"{np.array_equal(exported_labels, sample_labels)}"
)

# %%
picture = plt.imread(os.path.splitext(codes_path)[0] + ".png")
top = picture[: picture.shape[0] * 3 // 8]  # its first 3 of 8 images
plt.figure(figsize=(4, 4 * top.shape[0] / top.shape[1]))
plt.imshow(top)
plt.axis("off")
plt.title("the top of the picture written beside codes.npz", fontsize=9)
plt.show()

# %% [markdown]
# ## From grids to token sequences
#
# A sequence model needs a one-dimensional sequence over a vocabulary. Read the grid in
# raster order (the order a PixelCNN uses), and reserve extra token ids for what is not a
# code: here a start token and one token per class, so that a Transformer trained on
# these sequences can be asked for a given digit by starting with its class token.
#
# | token ids | meaning |
# |---|---|
# | $0 \dots K-1$ | image codes |
# | $K \dots K+9$ | class of the digit |
# | $K+10$ | start of sequence |

# %%
CLASS_OFFSET, START = K, K + 10
grid_cells = math.prod(codes.shape[1:])
sequences = np.concatenate(
    [
        np.full((len(codes), 1), START),
        CLASS_OFFSET + y_test[:, None].astype("int64"),
        codes.reshape(len(codes), grid_cells),
    ],
    axis=1,
).astype("int32")
print(f"vocabulary {START + 1} tokens; sequences {sequences.shape}; the first one:")
print(sequences[0].tolist())

# Back: drop the two leading tokens, reshape to the grid, decode.
back = sequences[:, 2:].reshape(codes.shape)
decoded = np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(back[:8])), 0, 1)
print("round trip exact:", np.array_equal(back, codes))
fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for c in range(8):
    axes[0, c].imshow(x_test[c, ..., 0], cmap="gray")
    axes[1, c].imshow(decoded[c, ..., 0], cmap="gray", vmin=0, vmax=1)
    axes[0, c].set_title(f"label token {sequences[c, 1]}", fontsize=6)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# `np.savez("tokens.npz", sequences=sequences)` is all a downstream training script needs
# (plus $K$ and the grid shape, to decode). For an `RQVAE`, whose codes are
# `(N, h, w, depth)`, the usual flattening is position by position with the depth
# innermost, `codes.reshape(N, h * w * depth)`; for a `VQVAE2`, one sequence per grid, the
# top one first.
#
# ## What an image costs in bits
#
# Three ways to count the bits of one image's codes, from the crudest to the tightest:
#
# 1. **Stored as integers**: $n \log_2 K$ bits for $n$ grid positions.
# 2. **Entropy-coded with the code frequencies**: an ideal coder for the overall code
#    histogram $p$ spends $-\log_2 p_k$ bits on code $k$, on average $n\,H(p)$ bits,
#    which is $n \log_2(\text{perplexity})$. It ignores context.
# 3. **Entropy-coded with a prior**: an arithmetic coder driven by an autoregressive
#    prior spends the prior's negative log-likelihood, $-\sum_i \log_2 p(c_i \mid
#    c_{<i})$ bits. With the class-conditional zoo prior this is given the label; the
#    label itself costs $\log_2 10 \approx 3.3$ more bits.

# %%
vq_result = vqkeras.evaluation.evaluate_reconstructions(vqvae, x_test)
prior = vqkeras.from_preset("pixelcnn_vqvae_mnist")
prior_result = vqkeras.evaluation.evaluate_prior(prior, codes, y_test.astype("int32"))
vq_bits = {
    "stored": vq_result["bits_per_image"],
    "entropy-coded": grid_cells * math.log2(vq_result["perplexity"]),
    "with the prior": grid_cells * prior_result["nll_nats_per_code"] / math.log(2),
}
print(f"vqvae_mnist: PSNR {vq_result['psnr_db']:.2f} dB")
for name, bits in vq_bits.items():
    print(f"  {name:15s} {bits:6.1f} bits per image ({bits / 784:.3f} bits per pixel)")

# %% [markdown]
# ## Cutting the depth of an RQ-VAE: bits against quality
#
# An RQ-VAE (tutorial 5) gives a whole curve from one model: decoding the first $k$ of its
# $d$ levels costs $k$ times the bits of one level. We train a small 4-level one here, and
# count its bits the first two ways, level by level (`codebook_statistics` gives the
# perplexity of every level).

# %%
keras.utils.set_random_seed(0)
rqvae = build_autoencoder(
    "rqvae", (28, 28, 1), latent_dim=16, channels=CHANNELS, num_embeddings=K, depth=4
)
rqvae.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
rqvae.fit(x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
rq_codes = vqkeras.evaluation.encode_indices(rqvae, x_test)  # (N, 7, 7, 4)
rq_stats = vqkeras.evaluation.codebook_statistics(rqvae, rq_codes)
rq_points = []
for k in range(1, rqvae.depth + 1):
    recon = rqvae.decode_indices(rq_codes[..., :k])
    psnr = vqkeras.evaluation.reconstruction_metrics(x_test, recon)["psnr_db"]
    stored = k * grid_cells * math.log2(K)
    entropy = sum(grid_cells * math.log2(rq_stats[f"perplexity_{level}"]) for level in range(k))
    rq_points.append((k, stored, entropy, psnr))
    print(
        f"RQ-VAE, {k} level(s): {stored:5.0f} bits stored, {entropy:5.0f} entropy-coded, "
        f"PSNR {psnr:.2f} dB"
    )

# %% [markdown]
# And a continuous latent for comparison: `klvae_mnist`'s latent carries
# $\mathrm{KL}(q(z\mid x)\Vert\mathcal{N}(0, I))$ nats per image. That is the length of a
# posterior sample coded under the prior with *bits-back coding*, a real but roundabout
# scheme; it is not the size of a file you could simply write. It is shown as a marker of
# its own for that reason.

# %%
klvae = vqkeras.from_preset("klvae_mnist")
kl_result = vqkeras.evaluation.evaluate_reconstructions(klvae, x_test)
kl_nats = np.mean(
    np.concatenate(
        [
            keras.ops.convert_to_numpy(klvae.encode(batch).kl())
            for batch in np.array_split(
                x_test, max(1, len(x_test) // vqkeras.evaluation.EVALUATION_BATCH_SIZE)
            )
        ]
    )
)
kl_bits = kl_nats / math.log(2)
print(f"klvae_mnist: PSNR {kl_result['psnr_db']:.2f} dB, KL {kl_bits:.0f} bits per image")

# %%
plt.figure(figsize=(7, 4.5))
ks, stored, entropy, psnrs = zip(*rq_points)
plt.plot(stored, psnrs, "o-", color="tab:blue", label="RQ-VAE (this notebook), stored")
plt.plot(entropy, psnrs, "o--", color="tab:blue", alpha=0.5, label="RQ-VAE, entropy-coded")
for k, x, y in zip(ks, stored, psnrs):
    plt.annotate(f"depth {k}", (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
for (name, bits), marker in zip(vq_bits.items(), ("s", "^", "*")):
    plt.scatter(
        bits,
        vq_result["psnr_db"],
        marker=marker,
        s=60,
        color="tab:orange",
        label=f"vqvae_mnist, {name}",
    )
plt.scatter(
    kl_bits,
    kl_result["psnr_db"],
    marker="D",
    color="tab:green",
    label="klvae_mnist, KL (bits-back)",
)
plt.xscale("log")
plt.xlabel("bits per image (log scale)")
plt.ylabel("PSNR (dB)")
plt.title("what an MNIST digit costs, and what it buys")
plt.legend(fontsize=7)
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# How to read the plot:
#
# - Moving left along one model's markers costs nothing in quality: the same codes, coded
#   more cleverly. The prior gets the biggest saving, because it uses the context of each
#   code; the histogram alone saves little.
# - Moving right buys PSNR: more levels of an RQ-VAE, or a continuous latent with
#   thousands of bits. Each extra dB costs more bits than the last.
# - In quick mode the RQ-VAE is far from converged and sits below the zoo model at equal
#   bits; [docs/families.md](../docs/families.md) has the same curve for models trained
#   on all of MNIST.
#
# ## What to try next
#
# - Export the whole MNIST training split with `vqkeras export-latents --model
#   vqvae_mnist --input mnist.npz --split train --out train_codes.npz` and train a small
#   Transformer (e.g. `keras_hub` decoder blocks) on the token sequences built above;
#   compare its NLL with the PixelCNN's.
# - Export `--format jsonl` and look at one line: the same grid as nested lists, ready for
#   tools outside Python.
# - `vqkeras export-latents --model vqvae_mnist --decode codes.npz --out decoded` turns
#   code files (also those written by `vqkeras sample`) back into images.
