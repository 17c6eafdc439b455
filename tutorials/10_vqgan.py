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
# # 10. What the discriminator buys: VQGAN
#
# Every autoencoder of tutorials 1 to 9 learns from a pixel loss, and its reconstructions
# are blurry. That is no bug: when the codes cannot tell apart several sharp images, the
# reconstruction that minimises the squared error is their average, and an average of
# sharp images is a blurry one. VQGAN (Esser et al. 2021) keeps the VQ-VAE and changes
# what it is trained against:
#
# - a **perceptual loss**, a distance between the activations of a feature network,
#   which blur changes much more than it changes pixels;
# - a **patch discriminator**, a second network trained at the same time to tell image
#   patches from reconstructed ones, whose verdict the autoencoder learns to fool.
#
# In this notebook you will:
#
# - see that squared error cannot tell blur from noise, and a perceptual distance can;
# - look inside `PatchDiscriminator` (one logit per patch) and the hinge losses;
# - train a small VQGAN with `fit` and read its log: the adversarial term's adaptive
#   weight, the discriminator's logits on real and reconstructed images;
# - measure what the zoo's `vqgan_cifar10` gained over the `vqvae_cifar10` it was
#   fine-tuned from: sharpness and a Fréchet distance, against PSNR.
#
# **Quick and full mode.** Quick mode (`VQKERAS_TUTORIAL_QUICK=1`, the default) uses the
# 256 MNIST and CIFAR-10 test images shipped with vqkeras, offline, and trains the small
# VQGAN on 192 digits for a few epochs: enough to read a GAN's log, not to learn much.
# Full mode (`VQKERAS_TUTORIAL_QUICK=0`) downloads MNIST and CIFAR-10 with
# `keras.datasets`, trains on the 60000 digits and measures the zoo models on the 10000
# CIFAR-10 test images.
#
# **Feature networks.** ImageNet's VGG16, LPIPS's choice, needs a download: here the
# perceptual losses and distances use the zoo's small classifiers, `mnist_classifier` and
# `cifar10_classifier`, and every figure says which. `PerceptualLoss.from_vgg16()` builds
# the LPIPS-style loss on VGG16 where its weights can be downloaded.

# %%
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import vqkeras
from vqkeras.evaluation import frechet_distance_of_images, reconstruction_metrics
from vqkeras.layers import PatchDiscriminator, PerceptualLoss
from vqkeras.losses import discriminator_hinge_loss, generator_hinge_loss
from vqkeras.models.factory import build_autoencoder
from vqkeras.validation import to_unit_range

QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"
print(f"Keras {keras.__version__}, backend {keras.config.backend()}, quick mode: {QUICK}")

# %%
if QUICK:
    digits, _ = vqkeras.samples.load("mnist")  # uint8 (256, 28, 28, 1), shipped
    photos, _ = vqkeras.samples.load("cifar10")  # uint8 (256, 32, 32, 3), shipped
    x_train, x_test = digits[:192], digits[192:]
    EPOCHS, BATCH_SIZE, CHANNELS = 6, 16, (16, 32)
else:
    (x_train, _), (x_test, _) = keras.datasets.mnist.load_data()
    x_train, x_test = x_train[..., None], x_test[..., None]
    (_, _), (photos, _) = keras.datasets.cifar10.load_data()
    EPOCHS, BATCH_SIZE, CHANNELS = 5, 128, (32, 64)
print("digits for training", x_train.shape, "| CIFAR-10 images to measure", photos.shape)

# %% [markdown]
# ## Blur and noise at the same squared error
#
# Take CIFAR-10 images, blur them with a 3x3 box filter, and add Gaussian noise to another
# copy, scaled so that both copies have the same mean squared error. To a pixel loss they
# are equally good. `PerceptualLoss.from_classifier("cifar10_classifier")` compares the
# two in the activations of the classifier's six convolutions, each unit-normalised over
# channels at every position (the LPIPS recipe, with plain means instead of LPIPS's learned
# channel weights); its inputs are on the [-1, 1] scale, as the autoencoders' are.

# %%
images = to_unit_range(photos[:128])
padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
blurred = sum(padded[:, i : i + 32, j : j + 32] for i in range(3) for j in range(3)) / 9.0
blur_mse = np.mean(np.square(blurred - images))
rng = np.random.default_rng(0)
noise = rng.normal(size=images.shape).astype("float32")
noisy = images + noise * np.sqrt(blur_mse / np.mean(np.square(noise)))
noise_mse = np.mean(np.square(noisy - images))

perceptual = PerceptualLoss.from_classifier("cifar10_classifier")


def perceptual_distance(a, b):
    return float(np.mean(keras.ops.convert_to_numpy(perceptual(a * 2.0 - 1.0, b * 2.0 - 1.0))))


print(f"blurred: MSE {blur_mse:.5f}, perceptual {perceptual_distance(images, blurred):.4f}")
print(f"noisy:   MSE {noise_mse:.5f}, perceptual {perceptual_distance(images, noisy):.4f}")
print(f"identical: perceptual {perceptual_distance(images, images):.4f}")

# %% [markdown]
# The squared errors are equal by construction; the perceptual distances are not: in
# `cifar10_classifier`'s features the blur costs about a quarter more than the noise
# (which of the two a network weighs more depends on the network). What matters for
# training is that the perceptual term has gradients that point at structure, edges and
# texture, where a pixel loss is content with the average.
#
# ## The patch discriminator
#
# `PatchDiscriminator` is a stack of stride-2 4x4 convolutions ending in one channel: it
# returns a grid of logits, one per overlapping patch, so it judges local texture and
# sharpness rather than whole images. The autoencoders' decoders output the [-1, 1]
# scale, and so does what the discriminator reads.

# %%
discriminator = PatchDiscriminator(filters=16, num_layers=2)
logits = discriminator(images[:4] * 2.0 - 1.0)
print("images", images[:4].shape, "-> logits", tuple(logits.shape))

# %% [markdown]
# With the hinge loss the discriminator pushes the logits of real patches above 1 and of
# reconstructed ones below -1, and the autoencoder's adversarial term is minus the mean
# logit of its reconstructions:
#
# $$L_D = \mathrm{mean}\,\mathrm{relu}(1 - D(x)) + \mathrm{mean}\,\mathrm{relu}(1 + D(\hat x)),
# \qquad L_G = -\mathrm{mean}\, D(\hat x).$$

# %%
real = np.array([[2.0, 0.5, -0.5]], dtype="float32")
fake = np.array([[-2.0, 0.0, 1.0]], dtype="float32")
by_hand = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
print("discriminator hinge:", float(discriminator_hinge_loss(real, fake)[0]), "by hand:", by_hand)
print("generator hinge:", float(generator_hinge_loss(fake)[0]), "by hand:", -fake.mean())

# %% [markdown]
# ## Training a small VQGAN
#
# The "vqgan" family is the "ema-vqvae" model with a discriminator as deep as its encoder
# and a second optimizer for it (`discriminator_optimizer` in `compile`, a copy of the
# autoencoder's by default). Its training step computes every term, and weights the
# adversarial one adaptively, as taming-transformers does:
#
# $$\lambda = 0.8 \cdot \frac{\lVert \nabla_{w} L_{rec} \rVert}{\lVert \nabla_{w} L_G \rVert + 10^{-4}}$$
#
# with $w$ the decoder's last kernel and $L_{rec}$ the pixel plus perceptual loss: the
# adversarial term pulls as hard as the reconstruction terms, whatever their scales.
# `discriminator_start` keeps the adversarial terms off for a number of steps; here it is
# 0, and the perceptual loss is in `mnist_classifier`'s convolutions.

# %%
keras.utils.set_random_seed(0)
vqgan = build_autoencoder(
    "vqgan",
    x_train.shape[1:],
    channels=CHANNELS,
    latent_dim=16,
    num_embeddings=64,
    perceptual_features="mnist_classifier",  # PerceptualLoss.from_classifier(...)
    discriminator_start=0,
)
vqgan.compile(
    optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9),
    discriminator_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9),
)
history = vqgan.fit(x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
log = history.history
print("logged:", ", ".join(sorted(log)))
for epoch in range(EPOCHS):
    print(
        f"epoch {epoch + 1}: reconstruction {log['reconstruction_loss'][epoch]:.4f}, "
        f"perceptual {log['perceptual_loss'][epoch]:.4f}, "
        f"adaptive weight {log['adaptive_weight'][epoch]:.3f}, "
        f"real logits {log['real_logits'][epoch]:+.2f}, fake logits {log['fake_logits'][epoch]:+.2f}"
    )

# %% [markdown]
# Read the log as a GAN's: the discriminator does its job while its real logits sit
# above its fake ones; when the gap keeps growing the discriminator is winning, and its
# term may start to wreck the reconstructions (that is the moment to lower the adversarial
# weight or the discriminator's learning rate: `vqkeras train --adversarial-weight`,
# `--discriminator-learning-rate`). The inference model needs none of this:
# `as_vqvae()` shares the encoder, quantizer and decoder, and is what a preset saves.

# %%
tokenizer = vqgan.as_vqvae()
print(type(tokenizer).__name__, "codes", tuple(tokenizer.encode_indices(x_test[:2]).shape))
print(
    "held-out digits:",
    {
        k: round(v, 3)
        for k, v in reconstruction_metrics(x_test, tokenizer.predict(x_test, verbose=0)).items()
        if k in ("psnr_db", "ssim")
    },
)

# %% [markdown]
# ## What it bought the zoo's CIFAR-10 tokenizer
#
# `vqgan_cifar10` is `vqvae_cifar10` (8x8 codes from 512, 576 bits per image) trained
# further with the L1 pixel loss, the perceptual loss in `cifar10_classifier` and a patch
# discriminator. Compare the two on the same images:
#
# - **PSNR**, which the pixel loss alone maximises;
# - **sharpness**: the mean magnitude of the reconstructions' finite differences, as a
#   fraction of the originals' (1 is as sharp as the images; blur lowers it);
# - the **Fréchet distance** between the feature statistics of the images and of the
#   reconstructions, in `cifar10_classifier`'s "features" layer. It is not FID (that needs
#   ImageNet's Inception network), and the same classifier also gave the perceptual loss,
#   so it is not independent of the training. From 256 images the estimate is biased
#   upward; the model cards give it on all 10000 test images.


# %%
def sharpness(x):
    dx, dy = np.abs(np.diff(x, axis=1)), np.abs(np.diff(x, axis=2))
    return dx.mean() + dy.mean()


originals = to_unit_range(photos)
rows, reconstructions = {}, {}
for name in ("vqvae_cifar10", "vqgan_cifar10"):
    model = vqkeras.from_preset(name)
    reconstructions[name] = np.clip(model.predict(photos, batch_size=256, verbose=0), 0, 1)
    metrics = reconstruction_metrics(photos, reconstructions[name])
    distance = frechet_distance_of_images(photos, reconstructions[name], "cifar10_classifier")
    rows[name] = (
        metrics["psnr_db"],
        sharpness(reconstructions[name]) / sharpness(originals),
        distance["frechet_distance"],
    )
print(f"{len(photos)} CIFAR-10 test images; FD in {distance['features']} features")
print(f"{'model':15s} {'PSNR dB':>8s} {'sharpness':>10s} {'FD':>8s}")
for name, (psnr, sharp, fd) in rows.items():
    print(f"{name:15s} {psnr:8.2f} {sharp:10.3f} {fd:8.2f}")

# %%
shown = 8
figure, axes = plt.subplots(3, shown, figsize=(shown * 1.2, 3.9))
for column in range(shown):
    for row, (title, batch) in enumerate(
        [("images", originals), *[(n, reconstructions[n]) for n in reconstructions]]
    ):
        axes[row, column].imshow(batch[column])
        axes[row, column].axis("off")
        if column == 0:
            axes[row, column].set_title(title, fontsize=8, loc="left")
plt.tight_layout()
plt.show()

# %% [markdown]
# The VQGAN gives up some PSNR, the figure a pixel loss is made to maximise, for
# reconstructions whose edges and texture are closer to the images' (sharpness nearer 1)
# and whose features sit closer to the images' in the classifier (a lower Fréchet
# distance). Which of the two a tokenizer should be depends on what reads its tokens: a
# generator trained on VQGAN codes draws sharper images.
#
# ## What to try next
#
# - Train a VQGAN on your images with `vqkeras train --family vqgan --perceptual-features
#   <classifier preset>` (see `docs/training.md`); with a network connection,
#   `PerceptualLoss.from_vgg16()` gives the LPIPS-style loss on VGG16.
# - Start the discriminator late (`discriminator_start`), as taming-transformers does when
#   training from scratch, and watch the logits when it comes in.
# - Try `AdversarialKLVAE` (the family "adversarial-klvae"): the same training for a
#   continuous latent, the AutoencoderKL of latent diffusion.
