"""Adversarial losses for training an autoencoder against a discriminator.

Every function takes logits, the discriminator's raw scores: one per image
`(B,)` or one per patch `(B, h, w, 1)` (a `PatchDiscriminator`'s), and
returns per-sample losses `(B,)`, the mean over each sample's patches,
computed in float32 whatever the logits' dtype. Take `ops.mean` of them for
a scalar loss term.

The discriminator's losses train it to score real images high and
reconstructions (fakes) low; the generator's loss trains the autoencoder to
make its reconstructions score high. `lecam_penalty` regularises the
discriminator when data are scarce.

Example:

```python
real_logits = discriminator(real_images)
fake_logits = discriminator(ops.stop_gradient(fake_images))
d_loss = ops.mean(vqkeras.losses.discriminator_hinge_loss(real_logits, fake_logits))
g_loss = ops.mean(vqkeras.losses.generator_hinge_loss(discriminator(fake_images)))
```
"""

from keras import ops


def _per_sample_mean(x):
    """float32 `x` `(B, ...)` averaged over all axes but the first."""
    x = ops.cast(x, "float32")
    if len(x.shape) == 1:
        return x
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=1)


def discriminator_hinge_loss(real_logits, fake_logits):
    """Hinge loss of the discriminator: `relu(1 - D(real)) + relu(1 + D(fake))`.

    taming-transformers' VQGAN uses half of this; the factor only rescales
    the discriminator's learning rate.

    Args:
        real_logits: logits of real images, `(B, ...)`.
        fake_logits: logits of reconstructions, `(B, ...)`.

    Returns:
        float32 `(B,)`: the sum of the two per-sample means.

    Reference:
        Lim & Ye, "Geometric GAN", 2017.
    """
    return _per_sample_mean(ops.relu(1.0 - ops.cast(real_logits, "float32"))) + _per_sample_mean(
        ops.relu(1.0 + ops.cast(fake_logits, "float32"))
    )


def discriminator_non_saturating_loss(real_logits, fake_logits):
    """Cross-entropy loss of the discriminator, real images labelled 1 and
    fakes 0: `softplus(-D(real)) + softplus(D(fake))`.

    Args:
        real_logits: logits of real images, `(B, ...)`.
        fake_logits: logits of reconstructions, `(B, ...)`.

    Returns:
        float32 `(B,)`: the sum of the two per-sample means.

    Reference:
        Goodfellow et al., "Generative Adversarial Nets", 2014.
    """
    return _per_sample_mean(ops.softplus(-ops.cast(real_logits, "float32"))) + _per_sample_mean(
        ops.softplus(ops.cast(fake_logits, "float32"))
    )


def generator_hinge_loss(fake_logits):
    """Generator loss paired with the hinge discriminator loss: `-D(fake)`
    (unbounded below; its gradient does not vanish when D wins).

    Args:
        fake_logits: logits of reconstructions, `(B, ...)`.

    Returns:
        float32 `(B,)`, the per-sample mean of `-fake_logits`.

    Reference:
        Lim & Ye, "Geometric GAN", 2017; Esser et al., "Taming Transformers
        for High-Resolution Image Synthesis", 2021.
    """
    return -_per_sample_mean(fake_logits)


def generator_non_saturating_loss(fake_logits):
    """Non-saturating generator loss: `softplus(-D(fake))`, the cross-entropy
    of the fakes labelled real.

    Args:
        fake_logits: logits of reconstructions, `(B, ...)`.

    Returns:
        float32 `(B,)`, the per-sample mean of `softplus(-fake_logits)`.

    Reference:
        Goodfellow et al., "Generative Adversarial Nets", 2014.
    """
    return _per_sample_mean(ops.softplus(-ops.cast(fake_logits, "float32")))


def lecam_penalty(real_logits, fake_logits, ema_real, ema_fake):
    """LeCAM regularisation of the discriminator:
    `(D(real) - ema_fake)^2 + (D(fake) - ema_real)^2`.

    `ema_real` and `ema_fake` are exponential moving averages of the mean
    real and fake logits over past steps (constants for the gradient); the
    penalty keeps the discriminator's predictions from drifting away from
    them, which stabilises GAN training on little data.

    Args:
        real_logits: logits of real images, `(B, ...)`.
        fake_logits: logits of reconstructions, `(B, ...)`.
        ema_real: scalar, the moving average of the real logits.
        ema_fake: scalar, the moving average of the fake logits.

    Returns:
        float32 `(B,)`: the sum of the two per-sample mean squared distances.

    Reference:
        Tseng et al., "Regularizing Generative Adversarial Networks under
        Limited Data", CVPR 2021 (equation 3).
    """
    ema_real = ops.stop_gradient(ops.cast(ema_real, "float32"))
    ema_fake = ops.stop_gradient(ops.cast(ema_fake, "float32"))
    real = ops.cast(real_logits, "float32")
    fake = ops.cast(fake_logits, "float32")
    return _per_sample_mean(ops.square(real - ema_fake)) + _per_sample_mean(
        ops.square(fake - ema_real)
    )


DISCRIMINATOR_LOSSES = {
    "hinge": discriminator_hinge_loss,
    "non_saturating": discriminator_non_saturating_loss,
}
GENERATOR_LOSSES = {
    "hinge": generator_hinge_loss,
    "non_saturating": generator_non_saturating_loss,
}
