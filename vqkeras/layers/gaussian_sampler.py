import numbers

import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.diagonal_gaussian import DiagonalGaussian


@keras.saving.register_keras_serializable(package="vqkeras")
class GaussianSampler(keras.layers.Layer):
    """Diagonal-Gaussian bottleneck with the reparameterization trick.

    Splits the last axis of its input, 2 * D channels, into the mean (first
    D) and the log-variance (last D) of a diagonal Gaussian posterior q(z|x),
    clamps the log-variance to `[logvar_min, logvar_max]` (as latent
    diffusion does: an encoder that outputs a huge log-variance early in
    training would otherwise overflow `exp`), and returns
    `z = mean + exp(0.5 * logvar) * eps`, eps ~ N(0, I), so gradients reach
    the mean and the log-variance. Outside training it returns the mean
    unless asked to sample. It also returns the per-sample KL divergence of
    q to the prior N(0, I).

    Everything is computed in float32 whatever the dtype policy (`exp` of a
    bfloat16 log-variance is coarse); the latents come back in the compute
    dtype. The noise comes from a `keras.random.SeedGenerator` attribute, so
    sampling works inside compiled train steps on every backend (JAX
    included) and a given `seed` reproduces the same draws.

    Args:
        logvar_min: lower clamp of the log-variance.
        logvar_max: upper clamp of the log-variance; greater than
            `logvar_min`.
        seed: int or None, the seed of the noise generator.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, ..., 2 * D)`: means then log-variances on
            the last axis.
        training: whether the call is a training step.
        sample: whether to draw z from the posterior; default: only in
            training, otherwise z is the mean.

    Returns:
        A dict with `"latents"` (z, `(B, ..., D)`, compute dtype), `"mean"`
        and `"logvar"` (float32, `(B, ..., D)`, the log-variance clamped) and
        `"kl"`: KL(q || N(0, I)) per sample in nats, float32 `(B,)`, summed
        over every latent dimension: `0.5 * sum(mean^2 + var - 1 - logvar)`.

    Example:

    >>> sampler = GaussianSampler(seed=0)
    >>> out = sampler(keras.random.normal((8, 4, 4, 6)), training=True)
    >>> out["latents"].shape, out["kl"].shape
    ((8, 4, 4, 3), (8,))

    Reference:
        Kingma and Welling, "Auto-Encoding Variational Bayes", 2014;
        Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion
        Models", 2022 (the log-variance clamp to [-30, 20]).
    """

    def __init__(self, logvar_min=-30.0, logvar_max=20.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        inf = float("inf")
        logvar_min = validation.float_in_range("logvar_min", logvar_min, -inf, inf)
        logvar_max = validation.float_in_range("logvar_max", logvar_max, -inf, inf)
        if not logvar_min < logvar_max:
            raise ValueError(
                "`logvar_min` must be less than `logvar_max`. "
                f"Received: logvar_min={logvar_min!r}, logvar_max={logvar_max!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.logvar_min = logvar_min
        self.logvar_max = logvar_max
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def input_dtype(self):
        # Keep float32 inputs float32 under a mixed policy: exp(logvar) and
        # the KL need the precision.
        return "float32"

    def build(self, input_shape):
        self._check_input_shape(input_shape)

    def _check_input_shape(self, shape):
        shape = tuple(shape)
        if len(shape) < 2 or (shape[-1] is not None and shape[-1] % 2):
            raise ValueError(
                f"GaussianSampler '{self.name}' expects inputs of shape (batch, ..., 2 * D): "
                "the means then the log-variances on the last axis, an even number of "
                f"channels. Received shape={shape}."
            )

    def posterior(self, inputs):
        """The posterior q(z|x) of `inputs` `(B, ..., 2 * D)`, log-variance
        clamped, as a `DiagonalGaussian`."""
        dtype = validation.dtype_of(inputs)
        if "float" not in dtype:
            raise TypeError(
                f"GaussianSampler '{self.name}' expects float inputs. Received dtype={dtype}."
            )
        self._check_input_shape(inputs.shape)
        mean, logvar = ops.split(ops.cast(inputs, "float32"), 2, axis=-1)
        return DiagonalGaussian(mean, ops.clip(logvar, self.logvar_min, self.logvar_max))

    def call(self, inputs, training=None, sample=None):
        posterior = self.posterior(inputs)
        if sample is None:
            sample = bool(training)
        latents = posterior.sample(seed=self.seed_generator) if sample else posterior.mode()
        return {
            "latents": ops.cast(latents, self.compute_dtype),
            "mean": posterior.mean,
            "logvar": posterior.logvar,
            "kl": posterior.kl(),
        }

    def compute_output_spec(self, inputs, training=None, sample=None):
        shape = tuple(inputs.shape)
        latent_shape = shape[:-1] + (None if shape[-1] is None else shape[-1] // 2,)
        return {
            "latents": keras.KerasTensor(latent_shape, dtype=self.compute_dtype),
            "mean": keras.KerasTensor(latent_shape, dtype="float32"),
            "logvar": keras.KerasTensor(latent_shape, dtype="float32"),
            "kl": keras.KerasTensor(shape[:1], dtype="float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {"logvar_min": self.logvar_min, "logvar_max": self.logvar_max, "seed": self.seed}
        )
        return config
