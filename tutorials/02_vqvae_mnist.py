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
# # 2. A VQ-VAE on MNIST, step by step
#
# A VQ-VAE turns an image into a small grid of integers and back. This notebook builds one
# from its parts and trains it with plain `model.fit`. You will:
#
# - run the encoder and look at its output grid of vectors;
# - look inside the codebook, and redo the nearest-code search by hand in NumPy;
# - check the straight-through estimator: how a gradient passes through an `argmin`;
# - train the model, follow its loss terms, code perplexity and codebook usage;
# - plot reconstructions and the code grids themselves.
#
# **Quick and full mode.** `VQKERAS_TUTORIAL_QUICK=1` (the default) trains a small model
# on the 256 MNIST test images shipped with vqkeras, offline, in about a minute on a CPU;
# `VQKERAS_TUTORIAL_QUICK=0` downloads MNIST (`keras.datasets.mnist.load_data()`) and
# trains the architecture of the `vqvae_mnist` zoo model on all 60000 training images.

# %%
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer, VectorQuantizer
from vqkeras.models import VQVAE

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
keras.utils.set_random_seed(0)
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    images, labels = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    x_train, x_test = images[:192], images[192:]
    EPOCHS, BATCH_SIZE, CHANNELS, NUM_CODES, RESTART = 20, 16, (16, 32), 64, 50
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    EPOCHS, BATCH_SIZE, CHANNELS, NUM_CODES, RESTART = 10, 128, (32, 64), 128, 100
CODE_DIM = 16
print("train", x_train.shape, "test", x_test.shape)

# %% [markdown]
# ## Step 1: the encoder
#
# `ConvEncoder` is a stack of stride-2 convolutions (each halves the height and width)
# and a residual block. Two of them take a 28x28 digit to a 7x7 grid; at each of the 49
# positions sits a vector of `latent_dim` = $D$ numbers, $z_e$, that describes a patch of
# the image. The models feed it pixels on the [-1, 1] scale.

# %%
encoder = ConvEncoder(latent_dim=CODE_DIM, channels=CHANNELS, num_residual_blocks=1)
z_e = encoder(x_test[:4].astype("float32") / 127.5 - 1.0)
print("encoder output z_e:", tuple(z_e.shape), "downsampling factor", encoder.downsampling_factor)

# %% [markdown]
# ## Step 2: the codebook and the nearest-code search
#
# The codebook is a table of $K$ vectors $e_1, \dots, e_K$, each of size $D$. Every
# vector $z_e$ of the grid is replaced by the nearest entry,
#
# $$k = \arg\min_j \lVert z_e - e_j \rVert^2 = \arg\min_j \big(\lVert z_e\rVert^2
#   - 2\, z_e \cdot e_j + \lVert e_j \rVert^2\big),$$
#
# and the grid of indices $k$ *is* the compressed image. The second form is how it is
# computed: one matrix product for all vectors at once.
#
# Here is a `VectorQuantizer` (the codebook learned by gradients) on the untrained
# encoder's outputs, and the same search written in NumPy. They must agree.

# %%
quantizer = VectorQuantizer(NUM_CODES, CODE_DIM)
indices = keras.ops.convert_to_numpy(quantizer.nearest_indices(z_e))  # (4, 7, 7)
codebook = keras.ops.convert_to_numpy(quantizer.codebook)  # (K, D)

flat = keras.ops.convert_to_numpy(z_e).reshape(-1, CODE_DIM)
distances = (
    np.sum(flat**2, axis=1, keepdims=True) - 2 * flat @ codebook.T + np.sum(codebook**2, axis=1)
)
by_hand = np.argmin(distances, axis=1).reshape(indices.shape)
print("codebook", codebook.shape, "| index grid", indices.shape)
print("NumPy search agrees with the layer at", np.mean(by_hand == indices) * 100, "% of positions")
print("codes of the first image:\n", indices[0])

# %% [markdown]
# ## Step 3: the straight-through estimator
#
# The quantizer's output is $z_q = e_k$. The argmin that picks $k$ is piecewise constant:
# its gradient is zero almost everywhere, so backpropagation alone would never tell the
# encoder how to change. The VQ-VAE paper's fix is to *copy* the gradient: in the
# forward pass the decoder sees $z_q$; in the backward pass, the gradient that arrives at
# $z_q$ is handed to $z_e$ unchanged. In code it is one line,
#
# $$z_q^{\text{ST}} = z_e + \mathrm{sg}[z_q - z_e],$$
#
# whose value is $z_q$ and whose derivative with respect to $z_e$ is the identity
# ($\mathrm{sg}$, stop-gradient, is `keras.ops.stop_gradient`).
#
# Check it: for a loss $L = \sum w \odot z_q$ with random weights $w$, the gradient with
# respect to the quantizer's *input* should be exactly $w$. Keras has no backend-neutral
# gradient function, so the helper below calls the backend's own.


# %%
def input_gradient(layer, inputs, loss_fn):
    """d loss_fn(layer(inputs)) / d inputs, with the active backend's autodiff."""
    backend = keras.config.backend()
    inputs = keras.ops.convert_to_numpy(inputs).astype("float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(inputs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(layer(x))
        return tape.gradient(loss, x).numpy()
    if backend == "jax":
        import jax

        weights = [v.value for v in layer.trainable_variables]
        state = [v.value for v in layer.non_trainable_variables]

        def stateless_loss(x):
            return loss_fn(layer.stateless_call(weights, state, x)[0])

        return np.asarray(jax.grad(stateless_loss)(inputs))
    import torch

    x = torch.tensor(inputs, requires_grad=True)
    loss_fn(layer(x)).backward()
    return x.grad.numpy()


w = np.random.default_rng(0).normal(size=z_e.shape).astype("float32")
grad = input_gradient(
    quantizer, z_e, lambda out: keras.ops.sum(keras.ops.multiply(w, out["quantized"]))
)
quantized = keras.ops.convert_to_numpy(quantizer(z_e)["quantized"])
print("forward value is the code:     ", np.allclose(quantized, codebook[indices]))
print("gradient reaching z_e equals w:", np.allclose(grad, w))

# %% [markdown]
# The copied gradient is only right if $z_e$ stays close to $z_q$, so two more loss
# terms keep them together. With the gradient-learned codebook:
#
# $$\mathcal{L} = \underbrace{\tfrac{1}{P}\lVert x - D(z_q)\rVert^2}_\text{reconstruction}
#   + \underbrace{\lVert \mathrm{sg}[z_e] - e_k\rVert^2}_\text{codebook}
#   + \beta\,\underbrace{\lVert z_e - \mathrm{sg}[e_k]\rVert^2}_\text{commitment}.$$
#
# The `EMAVectorQuantizer` replaces the codebook term by a running average: each code
# becomes the exponential moving average (decay 0.99) of the encoder outputs assigned to
# it, like an online k-means, and only the commitment term is a loss. It learns faster
# and more stably; two options protect it from unused codes (tutorial 4):
# `init_from_first_batch` starts the codes at real encoder outputs, and
# `restart_after_steps` moves a code unused for that many steps onto a random encoder
# output. It is what the zoo model uses, and what we train below.
#
# ## Step 4: the decoder, the model, and `fit`
#
# `ConvDecoder` mirrors the encoder, upsampling with sub-pixel convolutions. `VQVAE` ties
# the three parts together; training behaviour lives in the model, so `compile` + `fit`
# on the images is all there is to write.

# %%
model = VQVAE(
    encoder=ConvEncoder(latent_dim=CODE_DIM, channels=CHANNELS, num_residual_blocks=1),
    decoder=ConvDecoder(output_channels=1, channels=CHANNELS[::-1], num_residual_blocks=1),
    quantizer=EMAVectorQuantizer(
        NUM_CODES,
        CODE_DIM,
        commitment_cost=0.25,
        restart_after_steps=RESTART,
        init_from_first_batch=True,
    ),
)
model.compile(optimizer=keras.optimizers.Adam(2e-3 if QUICK else 1e-3))
history = model.fit(
    x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, validation_data=(x_test,), verbose=0
).history
print(f"{model.count_params():,d} parameters; logged:", ", ".join(sorted(history)))

# %% [markdown]
# The logs hold every loss term by name and two code statistics, accumulated over the
# epoch: `perplexity` ($e^{H}$ of the code histogram: the number of equally used codes
# with the same entropy) and `codebook_usage` (the fraction of the $K$ codes used at
# least once).

# %%
epochs = np.arange(1, EPOCHS + 1)
fig, axes = plt.subplots(1, 4, figsize=(16, 3))
for ax, key in zip(
    axes, ("reconstruction_loss", "commitment_loss", "perplexity", "codebook_usage")
):
    ax.plot(epochs, history[key], label="train")
    ax.plot(epochs, history[f"val_{key}"], label="held out")
    ax.set_title(key)
    ax.set_xlabel("epoch")
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Step 5: reconstructions and code grids
#
# `encode_indices` gives the integer grids, `decode_indices` turns grids back into images.
# Below: test digits, their 7x7 code grids (each number is a code index; the colours only
# help the eye spot equal codes) and the images decoded from those 49 integers.

# %%
shown = x_test[:6]
codes = keras.ops.convert_to_numpy(model.encode_indices(shown))  # int32 (6, 7, 7)
decoded = np.clip(keras.ops.convert_to_numpy(model.decode_indices(codes)), 0, 1)

fig, axes = plt.subplots(3, len(shown), figsize=(2.2 * len(shown), 6.6))
for c in range(len(shown)):
    axes[0, c].imshow(shown[c, ..., 0], cmap="gray")
    axes[1, c].imshow(codes[c], cmap="tab20", vmin=0, vmax=NUM_CODES - 1)
    for (i, j), code in np.ndenumerate(codes[c]):
        axes[1, c].text(j, i, str(code), ha="center", va="center", fontsize=6)
    axes[2, c].imshow(decoded[c, ..., 0], cmap="gray", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
for r, name in enumerate(("input", "codes (7x7)", "decoded")):
    axes[r, 0].set_ylabel(name)
plt.tight_layout()
plt.show()

# %% [markdown]
# Codes describe a position as well as its content: the codes along the border are nearly
# the same for every digit (the convolutions see the zero padding there), while those in
# the middle follow the strokes. How often is each code used over the held-out images? A flat histogram means the
# codebook is well used; a few tall bars and many empty ones would be *collapse*.

# %%
test_codes = vqkeras.evaluation.encode_indices(model, x_test)
stats = vqkeras.evaluation.code_statistics(test_codes, NUM_CODES)
counts = np.sort(np.bincount(test_codes.ravel(), minlength=NUM_CODES))[::-1]
plt.figure(figsize=(8, 2.5))
plt.bar(np.arange(NUM_CODES), counts)
plt.xlabel("codes, most used first")
plt.ylabel("count")
plt.title(
    f"{stats['codebook_usage']:.0%} of {NUM_CODES} codes used, perplexity {stats['perplexity']:.1f}"
)
plt.show()

# %% [markdown]
# ## Against the zoo model
#
# The same measurements for our model and for `vqvae_mnist`, the zoo model of the same
# architecture trained for 18 epochs on the MNIST training split, on the same held-out
# images. In quick mode our model has seen 192 images for a few hundred steps, so expect
# it to trail by several dB; the zoo model's card (`zoo/vqvae_mnist/README.md`) has its
# figures on the whole test split.

# %%
zoo_model = vqkeras.from_preset("vqvae_mnist")
for name, m in (("this notebook", model), ("vqvae_mnist", zoo_model)):
    r = vqkeras.evaluation.evaluate_reconstructions(m, x_test)
    print(
        f"{name:14s} PSNR {r['psnr_db']:5.2f} dB  SSIM {r['ssim']:.3f}  "
        f"codes used {r['codebook_usage']:.0%} of {m.num_embeddings}  "
        f"perplexity {r['perplexity']:5.1f}  {r['bits_per_image']:.0f} bits per image"
    )

# %% [markdown]
# ## What to try next
#
# - Swap the quantizer for `VectorQuantizer(NUM_CODES, CODE_DIM)`: the logs gain a
#   `codebook_loss`; compare the codebook usage after training (tutorial 4 does this
#   carefully).
# - Change $\beta$ (`commitment_cost`: 0.05, 0.25, 1.0) and watch the commitment loss and the PSNR.
# - Save the model as a preset with `model.save_to_preset("my_vqvae")` and load it back
#   with `vqkeras.from_preset("my_vqvae")`.
# - Decode a code grid you edit by hand: change the codes of one row and see which part
#   of the digit changes.
