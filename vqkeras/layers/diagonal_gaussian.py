"""A diagonal Gaussian distribution over latent tensors: the posterior q(z|x)
of the continuous-latent autoencoders."""

import keras
from keras import ops

from vqkeras import distribution, validation


class DiagonalGaussian:
    """A Gaussian with diagonal covariance, one independent normal per entry.

    A plain Python object (not a layer): `GaussianSampler.posterior` and the
    `encode` methods of `VAE` and `KLVAE` return it, so a caller picks
    between a draw (`sample`) and the most likely latents (`mode`). The first
    axis is the batch; every other axis is a latent dimension. All values
    are float32.

    Args:
        mean: float tensor `(B, ...)`, the means.
        logvar: float tensor of the same shape, the log-variances (already
            clamped by the caller if needed: `GaussianSampler` clamps them).

    Example:

    >>> posterior = DiagonalGaussian(ops.zeros((2, 4, 4, 3)), ops.zeros((2, 4, 4, 3)))
    >>> posterior.sample(seed=1).shape
    (2, 4, 4, 3)
    >>> posterior.kl().shape  # zero: this is N(0, I) itself
    (2,)

    Reference:
        Kingma and Welling, "Auto-Encoding Variational Bayes", 2014 (the
        reparameterization trick, and the closed-form KL of appendix B).
    """

    def __init__(self, mean, logvar):
        for name, value in (("mean", mean), ("logvar", logvar)):
            dtype = validation.dtype_of(value)
            if "float" not in dtype:
                raise TypeError(
                    f"DiagonalGaussian expects a float `{name}`. Received dtype={dtype}."
                )
        mean_shape, logvar_shape = tuple(mean.shape), tuple(logvar.shape)
        if len(mean_shape) < 2 or mean_shape != logvar_shape:
            raise ValueError(
                "DiagonalGaussian expects `mean` and `logvar` of the same shape "
                "(batch, ...) with at least 2 axes. "
                f"Received shapes {mean_shape} and {logvar_shape}."
            )
        self.mean = ops.cast(mean, "float32")
        self.logvar = ops.cast(logvar, "float32")

    @property
    def var(self):
        return ops.exp(self.logvar)

    @property
    def std(self):
        return ops.exp(0.5 * self.logvar)

    def sample(self, seed=None):
        """A reparameterized draw `mean + std * eps`, eps ~ N(0, I).

        The draw is differentiable with respect to `mean` and `logvar`.

        Args:
            seed: None, an int or a `keras.random.SeedGenerator`. Inside a
                JAX-traced function, pass a `SeedGenerator` (as
                `GaussianSampler` does): None or an int draws the same noise
                at every step there.
        """
        shape = ops.shape(self.mean)
        # Under a tf.distribute strategy: one device's draw for the global
        # batch, of which this replica keeps its own slice (otherwise every
        # replica would draw the same noise for its different images).
        offset, total = distribution.replica_offset(shape[0])
        eps = keras.random.normal((total, *shape[1:]), dtype="float32", seed=seed)
        eps = ops.slice(eps, (offset,) + (0,) * (len(shape) - 1), shape)
        return self.mean + self.std * eps

    def mode(self):
        """The most likely latents: the mean."""
        return self.mean

    def kl(self):
        """KL(q || N(0, I)) per sample, in nats: a float32 vector `(B,)`.

        Closed form, summed over every latent dimension:
        `0.5 * sum(mean^2 + var - 1 - logvar)`.
        """
        axes = tuple(range(1, len(self.mean.shape)))
        return 0.5 * ops.sum(ops.square(self.mean) + self.var - 1.0 - self.logvar, axis=axes)

    def __repr__(self):
        return f"DiagonalGaussian(shape={tuple(self.mean.shape)})"
