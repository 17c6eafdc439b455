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
# # 6. Generating digits with a PixelCNN prior
#
# A VQ-VAE alone cannot generate: random code grids decode to scribbles (tutorials 1 and
# 3). What it lacks is a model of *which code grids occur*, a prior $p(\text{codes})$.
# With one, generating is two steps: sample a code grid from the prior, decode it. In
# this notebook you will:
#
# - see how an autoregressive prior factorizes $p(\text{codes})$ and how a PixelCNN keeps
#   it causal;
# - load the zoo's class-conditional prior `pixelcnn_vqvae_mnist`, measure it, and sample
#   digits of a chosen class;
# - see what the sampling `temperature` and `top_k` do, judged by a digit classifier;
# - train a small prior yourself with `fit`.
#
# **Quick and full mode.** Quick mode (`VQKERAS_TUTORIAL_QUICK=1`, the default) uses the
# 256 MNIST test images shipped with vqkeras, offline, draws few samples, and trains the
# small prior for one epoch on 192 code grids: enough to show the API, far too little to
# learn digits. Full mode (`VQKERAS_TUTORIAL_QUICK=0`) downloads MNIST
# (`keras.datasets.mnist.load_data()`), measures on the whole test split, draws 100
# samples per setting and trains the prior on the codes of the 60000 training images.
#
# Sampling runs in one compiled loop on TensorFlow and JAX; on PyTorch it runs eagerly and
# is several times slower.

# %%
import math
import os
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.models import PixelCNNPrior

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    x_train, y_train = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, y_train = x_train[:192], y_train[:192]
    x_test, y_test = vqkeras.samples.load("mnist")
    x_test, y_test = x_test[192:], y_test[192:]
    SAMPLES_PER_CLASS, PRIOR_EPOCHS = 5, 1
else:
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    SAMPLES_PER_CLASS, PRIOR_EPOCHS = 100, 5
vqvae = vqkeras.from_preset("vqvae_mnist")
prior = vqkeras.from_preset("pixelcnn_vqvae_mnist")
classifier = vqkeras.from_preset("mnist_classifier")
K = vqvae.num_embeddings
print(f"VQ-VAE: 7x7 codes, K={K}; prior: {prior.count_params():,d} parameters")


def show_digits(batch, title=None, per_row=10):
    """A grid of decoded digits (float32 on [0, 1])."""
    batch = np.clip(keras.ops.convert_to_numpy(batch), 0, 1)
    rows = math.ceil(len(batch) / per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.9, rows * 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), batch):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    if title:
        fig.suptitle(title, fontsize=9)
    plt.tight_layout()
    plt.show()


# %% [markdown]
# ## An autoregressive prior over code grids
#
# Read the 7x7 grid in raster order (row by row, left to right), as 49 tokens
# $c_1, \dots, c_{49}$. Any distribution over grids can be written as a product of
# conditionals, each token given the ones before it and, for a class-conditional prior,
# the label $y$:
#
# $$p(c_1, \dots, c_{49} \mid y) = \prod_{i=1}^{49} p(c_i \mid c_1, \dots, c_{i-1}, y).$$
#
# A network outputs, at every position, a softmax over the $K$ codes. Training is
# cross-entropy against the real codes, all positions at once; the loss, in nats per
# code, is the negative log-likelihood `nll`. The network must not peek: the logits at
# position $i$ may depend only on codes before $i$. A PixelCNN guarantees it with *masked*
# convolutions, whose kernel weights after the centre (in raster order) are zero. Mask
# "A", in the first layer, zeroes the centre too, so a position never sees its own code;
# mask "B", in the later layers, keeps the centre, which by then holds features of the
# earlier positions only. The Gated PixelCNN used here splits the work into a vertical
# stack (the rows above) and a horizontal stack (the row so far, to the left), which
# removes the blind spot of a plain stack of masked convolutions.
#
# The positions the prediction at (3, 4) may use:

# %%
order = np.arange(49).reshape(7, 7)
target = 3 * 7 + 4
plt.figure(figsize=(3, 3))
plt.imshow(np.where(order < target, 1, np.where(order == target, 2, 0)), cmap="Blues")
for (i, j), n in np.ndenumerate(order):
    plt.text(j, i, str(n), ha="center", va="center", fontsize=7)
plt.title("raster order: predicting 25 from 0-24", fontsize=9)
plt.axis("off")
plt.show()

# %% [markdown]
# ## How good is the zoo prior?
#
# `evaluate_prior` gives the NLL of real code grids, with their labels. Compare it with
# $\ln K$, the NLL of guessing uniformly, and with the entropy of the codes' overall
# frequencies (a prior that ignores context). The model card of `pixelcnn_vqvae_mnist`
# reports the NLL on the whole MNIST test split.

# %%
test_codes = vqkeras.evaluation.encode_indices(vqvae, x_test)
result = vqkeras.evaluation.evaluate_prior(prior, test_codes, y_test.astype("int32"))
frequencies = np.bincount(test_codes.ravel(), minlength=K) / test_codes.size
marginal = -np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0]))
print(f"{len(test_codes)} held-out grids:")
print(f"  uniform guess          {math.log(K):.3f} nats per code")
print(f"  code frequencies only  {marginal:.3f} nats per code")
print(
    f"  PixelCNN prior         {result['nll_nats_per_code']:.3f} nats per code, "
    f"{result['bits_per_dim']:.4f} bits per pixel value"
)
card = vqkeras.zoo.info("pixelcnn_vqvae_mnist")["metrics"]
print(
    f"model card, {card['grids']} test grids: {card['nll_nats_per_code']:.3f} nats per code, "
    f"{card['bits_per_dim']:.4f} bits per pixel value"
)

# %% [markdown]
# ## Class-conditional samples
#
# `prior.sample(num, labels=..., seed=...)` draws `num` grids position by position; with
# the same seed it draws the same grids on the same backend. `decode_indices` turns them
# into images. One row per digit:

# %%
labels = np.repeat(np.arange(10), 10 if not QUICK else 6).astype("int32")
start = time.time()
sampled_codes = prior.sample(len(labels), labels=labels, seed=0)
print(f"{len(labels)} grids sampled in {time.time() - start:.1f} s", tuple(sampled_codes.shape))
show_digits(vqvae.decode_indices(sampled_codes), per_row=len(labels) // 10)

# %% [markdown]
# ## Temperature
#
# Each code is drawn from $\mathrm{softmax}(\ell / T)$, with $\ell$ the logits. $T < 1$
# sharpens the distribution towards the most likely codes: cleaner, more typical, less
# varied digits. $T > 1$ flattens it: more variety, and more mistakes. To measure it, the
# zoo's `mnist_classifier`, a small CNN trained on real digits, judges whether each sample
# is the digit that was asked for (`conditional_sample_agreement`). Diversity is measured
# by the perplexity of the codes of ten samples, one per digit: how many distinct codes
# they use, weighted by frequency.

# %%
accuracy = vqkeras.zoo.info("mnist_classifier")["metrics"]["accuracy"]
print(f"mnist_classifier: {accuracy:.1%} accurate on real MNIST test digits (model card)")
temperatures = [0.5, 0.8, 1.0, 1.3]
rows = []
for t in temperatures:
    judged = vqkeras.evaluation.conditional_sample_agreement(
        prior, vqvae, classifier, samples_per_class=SAMPLES_PER_CLASS, seed=1, temperature=t
    )
    codes_t = keras.ops.convert_to_numpy(
        prior.sample(10, labels=np.arange(10), temperature=t, seed=2)
    )
    diversity = vqkeras.evaluation.code_statistics(codes_t, K)["perplexity"]
    rows.append((t, judged["agreement"], diversity, vqvae.decode_indices(codes_t)))
    print(
        f"T={t}: classifier agrees on {judged['agreement']:.0%} of {judged['samples']} samples; "
        f"code perplexity of the 10 samples below {diversity:.1f}"
    )

fig, axes = plt.subplots(len(rows), 10, figsize=(9, 1 * len(rows)))
for r, (t, agreement, _, images) in enumerate(rows):
    for c, image in enumerate(np.clip(keras.ops.convert_to_numpy(images), 0, 1)):
        axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(f"T={t}\n{agreement:.0%} agree", rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# In quick mode the agreement rests on only a few samples per digit, so it moves by
# whole tens of percent from one seed to the next; full mode uses 100 per digit, as the
# model card does.
#
# ## Top-k sampling
#
# `top_k=k` allows only the $k$ most likely codes at each position (ties included), and
# renormalizes. `top_k=1` is greedy decoding: the single most likely grid for each label,
# the same for every seed. Larger $k$ gives back the diversity; `top_k=None` is plain
# sampling.

# %%
settings = [1, 5, 20, None]
fig, axes = plt.subplots(len(settings), 10, figsize=(9, 1 * len(settings)))
for r, k in enumerate(settings):
    codes_k = prior.sample(10, labels=[3] * 10, top_k=k, seed=3)
    distinct = len({grid.tobytes() for grid in keras.ops.convert_to_numpy(codes_k)})
    print(f"top_k={k}: {distinct} distinct grids among 10 samples of the digit 3")
    for c, image in enumerate(
        np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(codes_k)), 0, 1)
    ):
        axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(f"top_k={k}", rotation=0, ha="right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Training a prior yourself
#
# A prior trains on code grids and labels with `compile` + `fit`, like any Keras model:
# export the grids with `encode_indices`, then fit. `image_size` adds `bits_per_dim` to
# the logs (the NLL of a whole grid in bits, divided by the 784 pixel values of a digit,
# the unit of the VQ-VAE paper). The model below is smaller than the zoo's (32 filters,
# 4 gated blocks).

# %%
train_codes = vqkeras.evaluation.encode_indices(vqvae, x_train)
small_prior = PixelCNNPrior(
    num_embeddings=K,
    grid_shape=train_codes.shape[1:],
    num_classes=10,
    filters=32,
    num_blocks=4,
    kernel_size=5,
    embedding_dim=32,
    image_size=(28, 28, 1),
)
small_prior.compile(optimizer=keras.optimizers.Adam(1e-3))
start = time.time()
history = small_prior.fit(
    train_codes,
    y_train.astype("int32"),
    epochs=PRIOR_EPOCHS,
    batch_size=32 if QUICK else 128,
    validation_data=(test_codes, y_test.astype("int32")),
    verbose=0,
).history
print(f"{len(train_codes)} grids, {PRIOR_EPOCHS} epoch(s) in {time.time() - start:.1f} s")
for key in ("nll", "val_nll", "bits_per_dim", "val_bits_per_dim"):
    print(f"  {key:17s} {history[key][-1]:.3f}")
show_digits(
    vqvae.decode_indices(small_prior.sample(10, labels=np.arange(10), seed=0)),
    title="samples of the prior trained above, digits 0-9",
)

# %% [markdown]
# In quick mode the prior has seen 192 grids once: its NLL is still close to the uniform
# guess and its samples are not digits yet. That is the point of the zoo prior, trained
# for several epochs on the codes of the MNIST training split (its model card,
# `zoo/pixelcnn_vqvae_mnist/README.md`, has the learning curve). In full mode this cell
# trains on all 60000 training grids.
#
# ## What to try next
#
# - Sample a whole page of one digit at $T = 0.8$ and pick your favourites; change the
#   seed for more.
# - Measure the classifier agreement and the diversity for many temperatures and plot one
#   against the other: the quality-diversity trade-off.
# - Train an unconditional prior (`num_classes=None`, `fit(codes)`) and classify its
#   samples to see which digits it draws most often.
# - The same recipe works for any VQ model: `vqkeras sample --model vqvae_mnist --prior
#   pixelcnn_vqvae_mnist --label 3 --out threes` does it from the command line.
