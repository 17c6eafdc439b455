import keras
import numpy as np

from vqkeras import validation
from vqkeras.models.vae import VAE


@keras.saving.register_keras_serializable(package="vqkeras")
class KLVAE(VAE):
    """KL-regularized autoencoder: the first stage of latent diffusion.

    The AutoencoderKL of Rombach et al. (2022): a convolutional encoder to a
    spatial diagonal-Gaussian latent (mean and log-variance, the
    log-variance clamped to [-30, 20] by the `GaussianSampler`), a decoder,
    and a KL term so small that the latents stay close to deterministic
    codes while keeping a bounded, roughly unit scale. It is a `VAE` with
    latent diffusion's conventions:

    - `kl_weight` (default 1e-6, as in latent diffusion) weighs the KL
      against the reconstruction error of the whole image. Both loss terms
      are divided by P, the number of pixel values of an image, so
      `kl_loss = kl_weight * KL / P` next to `reconstruction_loss = MSE per
      pixel value`: the ratio of the two terms is latent diffusion's (which
      sums its per-pixel reconstruction loss over the image). Unlike latent
      diffusion, the reconstruction loss is plain MSE: no L1, perceptual
      (LPIPS) or adversarial terms (`AdversarialKLVAE` adds them), and no
      learned output log-variance.
    - `scaling_factor` (default 1.0) and `shift_factor` (default 0.0)
      normalise latents for a diffusion model trained on them:
      `(z - shift_factor) * scaling_factor` has about unit standard deviation
      (the shift is Stable Diffusion 3's and Flux's; latent diffusion has
      none):
      `compute_scaling_factor(images)` measures 1 / std of posterior samples
      over training data (latent diffusion does this on one batch);
      set it with `model.scaling_factor = ...`. Both are part of the config.

    Which methods use `scaling_factor` and `shift_factor`: only
    `encode_scaled` and `decode_scaled`. `encode` returns the unscaled posterior and `decode`
    takes unscaled latents, like `VAE`.

    Fit logs: `loss`, `reconstruction_loss`, `kl_loss`, and `kl`, the
    unweighted KL in nats per image averaged over the epoch (`kl_loss` is
    tiny by design). `evaluate` and `predict` decode the posterior mean.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions are
    float32 on the [0, 1] scale, not clipped.

    Args:
        encoder: a layer from images on the [-1, 1] scale to `(B, h, w, 2 * D)`
            (means then log-variances) with a `downsampling_factor`
            attribute, e.g. `ConvEncoder(latent_dim=2 * D)`.
        decoder: a layer from latents `(B, h, w, D)` to images on the
            [-1, 1] scale with an `output_channels` attribute, e.g.
            `ConvDecoder`.
        kl_weight: weight of the KL term, >= 0 (see above).
        scaling_factor: positive factor applied by `encode_scaled` and
            undone by `decode_scaled`.
        shift_factor: offset subtracted by `encode_scaled` before the
            scaling, added back by `decode_scaled`.
        sampler: the `GaussianSampler` (log-variance clamp and seed);
            default `GaussianSampler()`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = vqkeras.models.KLVAE(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=2 * 4, channels=(32, 64)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=1, channels=(64, 32)),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)   # uint8 (N, 28, 28, 1)
    model.scaling_factor = model.compute_scaling_factor(x_train[:10000])
    posterior = model.encode(x_test[:8])           # DiagonalGaussian (8, 7, 7, 4)
    images = model.decode(posterior.mode())        # float32 (8, 28, 28, 1)
    z = model.encode_scaled(x_test[:8], seed=0)    # about unit std: diffusion space
    images = model.decode_scaled(z)
    ```

    Reference:
        Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion
        Models", CVPR 2022 (section 3.1 and appendix G).
    """

    def __init__(
        self,
        encoder,
        decoder,
        kl_weight=1e-6,
        scaling_factor=1.0,
        shift_factor=0.0,
        sampler=None,
        **kwargs,
    ):
        super().__init__(encoder, decoder, kl_weight=kl_weight, sampler=sampler, **kwargs)
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor

    @property
    def scaling_factor(self):
        """Positive float applied by `encode_scaled`, undone by `decode_scaled`."""
        return self._scaling_factor

    @scaling_factor.setter
    def scaling_factor(self, value):
        self._scaling_factor = validation.float_in_range(
            "scaling_factor", value, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )

    @property
    def shift_factor(self):
        """Float subtracted by `encode_scaled` before scaling, added back by
        `decode_scaled`."""
        return self._shift_factor

    @shift_factor.setter
    def shift_factor(self, value):
        self._shift_factor = validation.float_in_range(
            "shift_factor", value, -float("inf"), float("inf"), False, False
        )

    def encode_scaled(self, images, sample=True, seed=None):
        """Images to `(latents - shift_factor) * scaling_factor`: what a latent
        diffusion model is trained on.

        Args:
            images: a batch of images.
            sample: draw from the posterior (latent diffusion's default), or
                take its mean when False.
            seed: None, an int or a `keras.random.SeedGenerator`, for the draw.
        """
        posterior = self.encode(images)
        latents = posterior.sample(seed=seed) if sample else posterior.mode()
        return (latents - self.shift_factor) * self.scaling_factor

    def decode_scaled(self, scaled_latents):
        """Normalised latents (as `encode_scaled` returns them, or as a
        diffusion model samples them) to float32 images in [0, 1]."""
        dtype = validation.dtype_of(scaled_latents)
        if "float" not in dtype:
            raise TypeError(f"Expected float latents. Received dtype={dtype}.")
        return self.decode(scaled_latents / self.scaling_factor + self.shift_factor)

    def compute_scaling_factor(self, data, batch_size=256, sample=True, seed=None):
        """1 / std of the latents over `data`, to set as `scaling_factor`.

        As latent diffusion does, the latents are posterior samples (`sample`
        True) and the std is that of all their values together (one number
        over every position and channel, mean subtracted), here over all of
        `data` rather than one batch. Nothing is changed on the model.

        Args:
            data: images (a NumPy array, uint8 or float), or an iterable of
                batches of images or of `(images, labels)` tuples, e.g. a
                `tf.data.Dataset`.
            batch_size: batch size for NumPy arrays (ignored for iterables).
            sample: use posterior samples (latent diffusion) or, when False,
                posterior means.
            seed: int or None, the seed of the draws.

        Returns:
            The scaling factor, a Python float.
        """
        batch_size = validation.positive_int("batch_size", batch_size)
        if isinstance(data, np.ndarray):
            self.check_images(data)
            batches = (data[i : i + batch_size] for i in range(0, len(data), batch_size))
        elif hasattr(data, "__iter__"):
            batches = iter(data)
        else:
            raise TypeError(
                "`data` must be a NumPy array of images or an iterable of batches. "
                f"Received: {type(data).__name__}"
            )
        generator = keras.random.SeedGenerator(seed)
        # Running mean and sum of squared deviations merged batch by batch
        # (Chan et al.), in float64: robust for any dataset size.
        count, mean, squares = 0, 0.0, 0.0
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch, _, _ = keras.utils.unpack_x_y_sample_weight(tuple(batch))
            posterior = self.encode(np.asarray(batch))
            latents = posterior.sample(seed=generator) if sample else posterior.mode()
            values = np.asarray(keras.ops.convert_to_numpy(latents), dtype="float64")
            if not values.size:
                continue
            batch_mean = values.mean()
            delta = batch_mean - mean
            squares += np.square(values - batch_mean).sum() + delta**2 * count * values.size / (
                count + values.size
            )
            mean += delta * values.size / (count + values.size)
            count += values.size
        if count == 0:
            raise ValueError("`data` holds no images: cannot compute a scaling factor.")
        std = float(np.sqrt(squares / count))
        if not std > 0:
            raise ValueError(
                f"The latents over `data` have standard deviation {std}: no scaling "
                "factor makes them unit-variance."
            )
        return 1.0 / std

    def get_config(self):
        config = super().get_config()
        config["scaling_factor"] = self.scaling_factor
        config["shift_factor"] = self.shift_factor
        return config
