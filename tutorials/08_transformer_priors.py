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
# # 8. Transformer priors: images as token sequences, generated
#
# Tutorial 7 turned images into tokens; here a Transformer reads them. A VQ model's code
# grid, flattened in raster order, is a sentence of 49 words from a vocabulary of 128,
# and a decoder-only Transformer models it as a language model models text (VQGAN's
# second stage, DALL-E, Parti). In this notebook you will:
#
# - check the two properties an autoregressive Transformer prior rests on: causality
#   (a token's prediction never sees the tokens after it) and the key/value cache
#   (sampling one token at a time gives the full forward pass's logits);
# - train a small `TransformerPrior` with `fit` and compare its NLL with the PixelCNN's;
# - sample digits from the zoo's `transformer_vqvae_mnist`, and steer them with
#   classifier-free guidance, judged by a digit classifier;
# - train a `MaskGITPrior` and watch it decode a whole grid in a few parallel steps.
#
# **Quick and full mode.** Quick mode (`VQKERAS_TUTORIAL_QUICK=1`, the default) uses the
# 256 MNIST test images shipped with vqkeras, offline: the priors trained here see 192
# grids, far too few to learn digits, so the generation sections use the zoo's trained
# prior. Full mode (`VQKERAS_TUTORIAL_QUICK=0`) downloads MNIST and trains on the 60000
# training grids.

# %%
import math
import os
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.evaluation import conditional_sample_agreement, encode_indices, evaluate_prior
from vqkeras.models import MaskGITPrior, TransformerPrior

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, y_train, x_test, y_test = images[:192], labels[:192], images[192:], labels[192:]
    EPOCHS, SIZES, SAMPLES_PER_CLASS = 10, {"embed_dim": 32, "num_heads": 2, "num_layers": 2}, 20
else:
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, SIZES, SAMPLES_PER_CLASS = 6, {"embed_dim": 128, "num_heads": 4, "num_layers": 4}, 100

vqvae = vqkeras.from_preset("vqvae_mnist")
train_codes = encode_indices(vqvae, x_train)  # int32 (N, 7, 7), codes in [0, 128)
test_codes = encode_indices(vqvae, x_test)
K = vqvae.num_embeddings
print("code grids:", train_codes.shape, test_codes.shape, "vocabulary:", K)

# %% [markdown]
# ## Images as sequences
#
# The prior factorizes a grid of $L = 49$ codes in raster order:
#
# $$p(c_1, \dots, c_L \mid y) = \prod_{t=1}^{L} p(c_t \mid c_{<t}, y)$$
#
# The Transformer's input is a start token (one per class $y$, plus a *null class* for
# the unconditional distribution) followed by the codes shifted by one; its output at
# position $t$ is the logits of $c_t$. Causal self-attention lets position $t$ attend to
# positions $\le t$ only, so the logits of $c_t$ depend on $c_{<t}$ and nothing else. That
# is not an approximation: change one code and the logits before it do not move by a
# single bit.

# %%
keras.utils.set_random_seed(0)
prior = TransformerPrior(K, (7, 7), num_classes=10, dropout=0.1, image_size=(28, 28, 1), **SIZES)
grid, label = train_codes[:1], y_train[:1].astype("int32")
changed = grid.copy()
changed[0, 3, 3] = (changed[0, 3, 3] + 1) % K  # code 24 of 49
before = keras.ops.convert_to_numpy(prior((grid, label))).reshape(49, K)
after = keras.ops.convert_to_numpy(prior((changed, label))).reshape(49, K)
moved = np.abs(after - before).max(axis=-1)
print("logits that moved, by position:", np.flatnonzero(moved > 0))
assert np.all(moved[:25] == 0) and np.all(moved[25:] > 0)

# %% [markdown]
# Only positions 25 to 48 moved: the logits of code 24 itself (position 24) do not depend
# on it, as they must not, since they are what predicts it.
#
# ## Training with `fit`
#
# The loss is the mean cross-entropy of the codes, in nats per code; `bits_per_dim`
# divides a grid's NLL in bits by the 784 pixel values of the image it stands for. A
# uniform guess over 128 codes costs $\ln 128 = 4.85$ nats per code.

# %%
prior.compile(optimizer=keras.optimizers.Adam(1e-3))
history = prior.fit(train_codes, y_train, epochs=EPOCHS, batch_size=32, verbose=0)
ours = evaluate_prior(prior, test_codes, y_test)
pixelcnn = evaluate_prior(vqkeras.from_preset("pixelcnn_vqvae_mnist"), test_codes, y_test)
print(f"uniform guess:          {math.log(K):.3f} nats/code")
print(f"our Transformer prior:  {ours['nll_nats_per_code']:.3f} nats/code on held-out grids")
print(f"zoo PixelCNN prior:     {pixelcnn['nll_nats_per_code']:.3f} nats/code")
plt.plot(history.history["nll"])
plt.xlabel("epoch")
plt.ylabel("training NLL (nats/code)")
plt.title("the Transformer prior learning the codes")
plt.show()

# %% [markdown]
# In quick mode 192 grids are not enough to learn much: the held-out NLL stays far above
# the zoo prior's, trained on 55000 grids. In full mode the gap closes.
#
# ## Sampling one token at a time, with a key/value cache
#
# Sampling draws $c_1$, feeds it back, draws $c_2$, and so on: 49 forward passes. Run
# naively, each pass recomputes the keys and values of every earlier token. The cache
# keeps them: each step runs the blocks on the new token only, attending to the stored
# keys and values. The cached step must give the full forward pass's logits (up to float
# rounding: the matrices have other shapes).

# %%
codes = train_codes[:4]
labels4 = y_train[:4].astype("int32")
full = keras.ops.convert_to_numpy(prior((codes, labels4))).reshape(4, 49, K)
flat = codes.reshape(4, 49)
cache = prior.initial_cache(4)
worst = 0.0
for position in range(49):
    previous = flat[:, max(position - 1, 0)]
    logits, cache = prior.next_logits(previous, position, labels4, cache)
    worst = max(worst, float(np.abs(keras.ops.convert_to_numpy(logits) - full[:, position]).max()))
print(f"largest difference, cached step vs full forward pass: {worst:.2e}")
assert worst < 1e-3


def seconds(function):
    function()  # the first call traces and compiles
    start = time.perf_counter()
    keras.ops.convert_to_numpy(function())
    return time.perf_counter() - start


cached = seconds(lambda: prior.sample(64, seed=0))
recomputed = seconds(lambda: prior.sample(64, seed=0, use_cache=False))
print(f"64 grids: cached {cached:.2f} s, recomputing every token {recomputed:.2f} s")

# %% [markdown]
# ## Generating digits with the zoo prior, and classifier-free guidance
#
# `transformer_vqvae_mnist` was trained on the codes of the 55000 MNIST training digits
# (its card has the figures). Its labels were dropped to the null class 10% of the time
# in training, so it also knows $p(c)$ without a label. Classifier-free guidance mixes
# the two distributions' logits,
#
# $$\ell = \ell_{\text{uncond}} + s\,(\ell_{\text{cond}} - \ell_{\text{uncond}}),$$
#
# where $s = 1$ is plain conditional sampling, $s = 0$ ignores the label, and $s > 1$
# pushes the samples towards what distinguishes the requested class. A digit
# classifier trained on real digits (`mnist_classifier`) judges whether a sample shows
# the digit asked for.

# %%
zoo_prior = vqkeras.from_preset("transformer_vqvae_mnist")
classifier = vqkeras.from_preset("mnist_classifier")
rows = []
for scale in (0.0, 1.0, 3.0):
    codes = zoo_prior.sample(10, labels=np.arange(10), guidance_scale=scale, seed=1)
    rows.append(np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(codes)), 0, 1))
figure, axes = plt.subplots(3, 10, figsize=(10, 3.3))
for row, scale in enumerate((0.0, 1.0, 3.0)):
    for digit in range(10):
        axes[row, digit].imshow(rows[row][digit, ..., 0], cmap="gray")
        axes[row, digit].axis("off")
    axes[row, 0].set_title(f"s={scale:g}", fontsize=8, loc="left")
plt.suptitle("digits 0 to 9 from transformer_vqvae_mnist, three guidance scales")
plt.show()

# %%
for scale in (0.0, 1.0, 2.0):
    agreement = conditional_sample_agreement(
        zoo_prior,
        vqvae,
        classifier,
        samples_per_class=SAMPLES_PER_CLASS,
        seed=2,
        guidance_scale=scale,
    )
    print(f"guidance {scale:g}: classifier agrees on {agreement['agreement']:.1%} of samples")

# %% [markdown]
# At $s = 0$ the label is ignored and agreement is chance (about 10%); at $s = 1$ it is
# the prior's own conditional distribution; larger scales trade variety for agreement.
#
# ## MaskGIT: a whole grid in a few parallel steps
#
# An autoregressive prior needs one step per token. MaskGIT (Chang et al. 2022) trains a
# bidirectional Transformer to fill in randomly masked codes (a cosine-scheduled share of
# each grid) and samples by iterative parallel decoding: start from a fully masked grid,
# predict every code, keep the most confident ones, re-mask the rest, repeat for a fixed
# number of steps. Its loss is the cross-entropy of the masked codes, not a likelihood of
# the grid.

# %%
keras.utils.set_random_seed(0)
maskgit = MaskGITPrior(K, (7, 7), num_classes=10, dropout=0.1, **SIZES)
maskgit.compile(optimizer=keras.optimizers.Adam(1e-3))
maskgit.fit(train_codes, y_train, epochs=EPOCHS, batch_size=32, verbose=0)
print("masked-code cross-entropy:", evaluate_prior(maskgit, test_codes, y_test))
grids, steps = maskgit.sample(4, labels=np.arange(4), num_steps=6, seed=0, return_history=True)
steps = keras.ops.convert_to_numpy(steps)
print("codes still masked after each step:", (steps[:, 0] == -1).sum(axis=(1, 2)))
figure, axes = plt.subplots(1, 6, figsize=(9, 1.8))
for step, axis in enumerate(axes):
    axis.imshow(steps[step, 0] == -1, cmap="gray_r", vmin=0, vmax=1)
    axis.set_title(f"step {step + 1}", fontsize=8)
    axis.axis("off")
plt.suptitle("masked positions (dark) of one grid, step by step")
plt.show()
parallel = seconds(lambda: maskgit.sample(64, num_steps=8, seed=0))
print(f"64 grids: MaskGIT in 8 steps {parallel:.2f} s, cached autoregressive {cached:.2f} s")

# %% [markdown]
# The cosine schedule reveals few codes first and many at the end: early decisions, made
# with little context, are the ones that matter most. MaskGIT runs 8 full passes over
# the 50-token sequence where the cached Transformer runs 49 one-token steps: which is
# faster depends on the model's size and the machine. With the tiny quick-mode models
# the per-step overhead of the cached loop is small and the two are close; on the larger
# models of `benchmarks/sampling.py` the gap is measured per backend.
#
# ## What to try next
#
# - `vqkeras sample --model vqvae_mnist --prior transformer_vqvae_mnist --guidance-scale 2
#   --top-p 0.9 --out runs/guided` samples from the command line; `vqkeras evaluate
#   transformer_vqvae_mnist --input mnist.npz --split test` recomputes its card.
# - Priors over an RQ-VAE's stacked codes (`depth`) or a VQ-VAE-2's bottom codes given
#   its top codes (`condition_num_embeddings`, `condition_grid_shape`): see
#   [docs/priors.md](../docs/priors.md).
# - `vqkeras compress --prior transformer_vqvae_mnist` codes images under the Transformer
#   prior ([docs/compression.md](../docs/compression.md)).
