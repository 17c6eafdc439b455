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
# # 4. Codebook collapse and its remedies
#
# A VQ-VAE with a codebook of $K$ codes can end up using only a few of them. The unused
# codes are wasted capacity: the images are described with fewer distinct symbols than
# you paid for, and reconstructions suffer. This is *codebook collapse*. You will:
#
# - see why it happens: a code that no encoder output is near never gets chosen, so it
#   never learns, so it is never chosen;
# - measure it with two numbers the fit logs already hold, `codebook_usage` and
#   `perplexity`;
# - train the same VQ-VAE three times, changing only the quantizer: a codebook learned by
#   gradients (`VectorQuantizer`), a codebook of moving averages (`EMAVectorQuantizer`),
#   and moving averages with dead-code restarts; and plot what happens to the codes.
#
# **Quick and full mode.** `VQKERAS_TUTORIAL_QUICK=1` (the default) trains on 192 of the
# 256 MNIST test images shipped with vqkeras, offline, in a minute or two on a CPU.
# `VQKERAS_TUTORIAL_QUICK=0` downloads MNIST (`keras.datasets.mnist.load_data()`) and
# trains on all 60000 training images.

# %%
import os
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer, VectorQuantizer
from vqkeras.models import VQVAE

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test = images[:192], images[192:]
    EPOCHS, BATCH_SIZE, CHANNELS, RESTART = 20, 16, (16, 32), 20
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS, RESTART = 8, 128, (32, 64), 100
NUM_CODES, CODE_DIM = 128, 16
steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
print(f"{len(x_train)} training images, {steps_per_epoch} steps per epoch, K={NUM_CODES}")

# %% [markdown]
# ## Two measures of code use
#
# Over a set of images, count how often each of the $K$ codes is chosen, and let $p_k$ be
# the fractions. Then
#
# - **codebook usage** $= \frac{1}{K}\,\#\{k : p_k > 0\}$, the fraction of codes used at
#   least once;
# - **perplexity** $= \exp\big(-\sum_k p_k \log p_k\big)$, the number of equally
#   frequent codes that would have the same entropy. It is $K$ when every code is used
#   equally often and 1 when one code does everything. $\log_2$ of it is what a code
#   really costs, in bits, under an ideal entropy coder.
#
# `VQVAE` logs both, accumulated over each epoch (`codebook_usage`, `perplexity`, and
# their `val_` versions), and `vqkeras.evaluation.code_statistics` computes them from a
# grid of codes.
#
# ## Why codes die
#
# The nearest-code search only ever touches the chosen codes:
#
# - a `VectorQuantizer` code learns from the codebook loss $\lVert \mathrm{sg}[z_e] -
#   e_k\rVert^2$, which has a gradient only for codes that were chosen;
# - an `EMAVectorQuantizer` code is the running mean of the encoder outputs assigned to it
#   (cluster sizes $N_k$ and sums $m_k$, decay $\gamma = 0.99$):
#   $N_k \leftarrow \gamma N_k + (1-\gamma)\,n_k$,
#   $m_k \leftarrow \gamma m_k + (1-\gamma) \sum_{z_e \to k} z_e$, $e_k = m_k / N_k$.
#   A code that gets no vectors has $n_k = 0$ and does not move.
#
# The codebook starts as a random draw, while the encoder's outputs start in some region
# of their own and keep moving while the network learns. Codes that end up far from all of
# them are never chosen again. Early winners attract more and more of the data, and the
# rest die.
#
# **Dead-code restart** (Jukebox, SoundStream): a code not chosen for
# `restart_after_steps` consecutive training steps is moved onto a randomly chosen encoder
# output of the current batch, where it is sure to be near data. It costs nothing at
# inference time.
#
# ## Three runs that differ only in the quantizer
#
# Same seed, same encoder and decoder, same $K = 128$ and $D = 16$, same optimizer:

# %%
quantizers = {
    "gradient codebook": lambda: VectorQuantizer(NUM_CODES, CODE_DIM),
    "EMA": lambda: EMAVectorQuantizer(NUM_CODES, CODE_DIM, seed=0),
    "EMA + dead-code restart": lambda: EMAVectorQuantizer(
        NUM_CODES, CODE_DIM, restart_after_steps=RESTART, seed=0
    ),
}
models, histories = {}, {}
for name, make_quantizer in quantizers.items():
    keras.utils.set_random_seed(0)
    model = VQVAE(
        encoder=ConvEncoder(CODE_DIM, channels=CHANNELS, num_residual_blocks=1),
        decoder=ConvDecoder(1, channels=CHANNELS[::-1], num_residual_blocks=1),
        quantizer=make_quantizer(),
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
    start = time.time()
    histories[name] = model.fit(
        x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, validation_data=(x_test,), verbose=0
    ).history
    models[name] = model
    print(
        f"{name:24s} {time.time() - start:5.1f} s; last epoch: "
        f"usage {histories[name]['codebook_usage'][-1]:.0%}, "
        f"perplexity {histories[name]['perplexity'][-1]:.1f}"
    )

# %% [markdown]
# ## Usage and perplexity over training
#
# Straight from the fit histories: one point per epoch, over all the training batches of
# that epoch.

# %%
epochs = np.arange(1, EPOCHS + 1)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
for name, history in histories.items():
    axes[0].plot(epochs, np.array(history["codebook_usage"]) * 100, marker=".", label=name)
    axes[1].plot(epochs, history["perplexity"], marker=".", label=name)
    axes[2].plot(epochs, history["val_reconstruction_loss"], marker=".", label=name)
axes[0].set_ylabel(f"% of the {NUM_CODES} codes used")
axes[1].set_ylabel("perplexity")
axes[2].set_ylabel("held-out reconstruction MSE")
axes[2].set_yscale("log")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## On held-out images
#
# `evaluate_reconstructions` gives the reconstruction figures and the code statistics of
# the held-out images; the histograms show each code's count, most used first.

# %%
results = {
    name: vqkeras.evaluation.evaluate_reconstructions(model, x_test)
    for name, model in models.items()
}
for name, r in results.items():
    print(
        f"{name:24s} PSNR {r['psnr_db']:5.2f} dB  usage {r['codebook_usage']:4.0%}  "
        f"perplexity {r['perplexity']:5.1f}  "
        f"({np.log2(r['perplexity']):.1f} of {np.log2(NUM_CODES):.0f} bits per code)"
    )

fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 2.8), sharey=True)
for ax, (name, model) in zip(axes, models.items()):
    codes = vqkeras.evaluation.encode_indices(model, x_test)
    ax.bar(np.arange(NUM_CODES), np.sort(np.bincount(codes.ravel(), minlength=NUM_CODES))[::-1])
    ax.set_title(name)
    ax.set_xlabel("codes, most used first")
axes[0].set_ylabel("count")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Where the dead codes are
#
# Project the encoder outputs of the held-out images and the codebook onto the two main
# directions of the encoder outputs (PCA), and mark which codes are used. Without
# restarts, the unused codes stay bunched where the random initial codebook put them:
# in the 16-dimensional space, every encoder output has some used code nearer than any
# of them, so the search never picks them. (A 2-D projection can make them look close to
# the data; they are not.) With restarts, the codes spread over the cloud of encoder
# outputs.

# %%
fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2))
for ax, (name, model) in zip(axes, models.items()):
    latents = keras.ops.convert_to_numpy(model.encoder(model.encoder_inputs(x_test)))
    latents = latents.reshape(-1, CODE_DIM)
    codebook = keras.ops.convert_to_numpy(model.quantizer.codebook)
    mean = latents.mean(axis=0)
    directions = np.linalg.svd(latents - mean, full_matrices=False)[2][:2].T
    used = np.bincount(
        keras.ops.convert_to_numpy(model.quantizer.nearest_indices(latents)), minlength=NUM_CODES
    )
    z2, c2 = (latents - mean) @ directions, (codebook - mean) @ directions
    ax.scatter(z2[:, 0], z2[:, 1], s=2, alpha=0.2, color="gray", label="encoder outputs")
    ax.scatter(*c2[used > 0].T, s=18, color="tab:blue", label="used codes")
    ax.scatter(*c2[used == 0].T, s=18, color="tab:red", marker="x", label="unused codes")
    ax.set_title(f"{name}: {np.mean(used > 0):.0%} used")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the results
#
# - **Gradient codebook and plain EMA** collapse: a small fraction of the codes carry
#   every image, and the perplexity (the codes really in use) stays far below $K$. The
#   encoder then has to say everything with those few symbols.
# - **Dead-code restarts** bring the unused codes back into use within a few epochs. With
#   more codes in play, each image can be described more finely; compare the PSNR
#   column, but in quick mode (a few hundred steps on 192 images) the PSNR differences
#   are small and change with the seed. The usage and perplexity differences are the
#   robust result.
# - The zoo model `vqvae_mnist` trains with restarts and `init_from_first_batch=True`
#   (below); its card reports every one of its 128 codes in use on the MNIST test split:

# %%
card = vqkeras.zoo.info("vqvae_mnist")["metrics"]
print(
    f"vqvae_mnist: usage {card['codebook_usage']:.0%}, perplexity {card['perplexity']:.1f}, "
    f"PSNR {card['psnr_db']:.2f} dB on {card['images']} test images"
)

# %% [markdown]
# ## What to try next
#
# - Add a fourth run with `EMAVectorQuantizer(..., restart_after_steps=RESTART,
#   init_from_first_batch=True)`: the first batch seeds the codebook with real encoder
#   outputs, so usage is high from the first epoch.
# - Make the restart threshold larger or smaller (`restart_after_steps`); a very small
#   one keeps moving codes that were about to be used.
# - Try a larger codebook ($K$ = 512): collapse gets worse without restarts.
# - Other remedies from the literature: a low-dimensional code lookup (project $z_e$ to
#   a few dimensions before the search), cosine-similarity codebooks, or a codebook
#   initialized by k-means on encoder outputs.
