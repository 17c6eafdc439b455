import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.gaussian_sampler import GaussianSampler
from vqkeras.models.autoencoder_model import AutoencoderModel, check_encoder_decoder


@keras.saving.register_keras_serializable(package="vqkeras")
class VAE(AutoencoderModel):
    """Variational autoencoder with a diagonal-Gaussian latent grid.

    The encoder outputs 2 * D channels per latent position: the mean and the
    log-variance of the posterior q(z|x) (e.g. `ConvEncoder(latent_dim=2 * D)`).
    In training the decoder sees a reparameterized draw
    `z = mean + exp(0.5 * logvar) * eps` (`GaussianSampler`); in `evaluate`
    and `predict` it sees the mean, so validation losses measure the
    reconstruction of the posterior mean, not a sampled ELBO.

    Loss terms, both averaged over the batch:
    - `reconstruction_loss`: mean squared error per pixel value on the
      [0, 1] scale, `||x - x_hat||^2 / P`, P = height * width * channels of
      the image;
    - `kl_loss`: `kl_weight * KL(q(z|x) || N(0, I)) / P`, the KL in nats summed
      over every latent dimension, then divided by the same P.

    So the loss is the negative ELBO divided by P, with a Gaussian decoder
    likelihood N(x_hat, sigma^2 I) on the [0, 1] pixel scale, rescaled by
    2 * sigma^2 and with additive constants dropped, where
    sigma^2 = kl_weight / 2: `MSE + kl_weight * KL / P = 2 sigma^2 * (-ELBO / P)
    + const`. `kl_weight = 1` (the default) is that ELBO with sigma^2 = 0.5, a
    wide likelihood that favours a small KL over sharp reconstructions; a
    smaller `kl_weight` trades KL for sharper images (beta-VAE with beta < 1,
    equivalently a narrower likelihood).

    Fit logs: `loss`, `reconstruction_loss`, `kl_loss`, and `kl`, the
    unweighted KL in nats per image averaged over the epoch.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions
    (`predict`, `decode`) are float32 on the [0, 1] scale, not clipped.

    Args:
        encoder: a layer from images on the [-1, 1] scale to `(B, h, w, 2 * D)`
            (means then log-variances) with a `downsampling_factor`
            attribute, e.g. `ConvEncoder(latent_dim=2 * D)`.
        decoder: a layer from latents `(B, h, w, D)` to images on the
            [-1, 1] scale with an `output_channels` attribute, e.g.
            `ConvDecoder`.
        kl_weight: weight of the KL term, >= 0 (see above; beta in beta-VAE;
            the keyword `beta` still works, deprecated).
        sampler: the `GaussianSampler` (log-variance clamp and seed);
            default `GaussianSampler()`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = vqkeras.models.VAE(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=2 * 4, channels=(32, 64)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=1, channels=(64, 32)),
        kl_weight=1.0,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)  # uint8 (N, 28, 28, 1)
    posterior = model.encode(x_test[:8])          # DiagonalGaussian (8, 7, 7, 4)
    images = model.decode(posterior.mode())       # float32 (8, 28, 28, 1)
    samples = model.decode(keras.random.normal((8, 7, 7, 4)))  # from the prior
    ```

    Reference:
        Kingma and Welling, "Auto-Encoding Variational Bayes", 2014;
        Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a
        Constrained Variational Framework", 2017.
    """

    # Sublayers serialized in the config (a subclass adds its own).
    SUBLAYER_NAMES = ("encoder", "decoder", "sampler")

    @validation.renamed_arguments(beta="kl_weight")
    def __init__(self, encoder, decoder, kl_weight=1.0, sampler=None, **kwargs):
        check_encoder_decoder(encoder, decoder)
        if sampler is None:
            sampler = GaussianSampler()
        if not isinstance(sampler, GaussianSampler):
            raise TypeError(
                f"`sampler` must be a GaussianSampler. Received: {type(sampler).__name__}"
            )
        kl_weight = validation.float_in_range(
            "kl_weight", kl_weight, 0.0, float("inf"), high_inclusive=False
        )
        super().__init__(loss_names=("reconstruction_loss", "kl_loss"), **kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sampler = sampler
        self.kl_weight = kl_weight
        self.kl_tracker = keras.metrics.Mean(name="kl")
        # Fail at construction, not at the first batch, when the encoder's
        # channels cannot hold a mean and a log-variance per latent dimension.
        self._posterior_channels()

    @property
    def image_channels(self):
        return self.decoder.output_channels

    @property
    def downsampling_factor(self):
        return self.encoder.downsampling_factor

    def _posterior_channels(self):
        f = self.downsampling_factor
        channels = self.encoder.compute_output_shape((1, f, f, self.image_channels))[-1]
        if channels % 2:
            raise ValueError(
                "The encoder must output an even number of channels, 2 * D: the means "
                "then the log-variances of D latent dimensions (e.g. "
                f"ConvEncoder(latent_dim=2 * D)). Received: {channels} channels."
            )
        return channels

    @property
    def latent_dim(self):
        """D, the channels of the latent grid (half the encoder's outputs)."""
        return self._posterior_channels() // 2

    def sublayer_build_shapes(self, input_shape):
        posterior_shape = self.encoder.compute_output_shape(input_shape)
        latent_shape = (*posterior_shape[:-1], self.latent_dim)
        return [
            (self.encoder, input_shape),
            (self.sampler, posterior_shape),
            (self.decoder, latent_shape),
        ]

    def compute_outputs(self, images, training=False):
        posterior = self.encoder(self.encoder_inputs(images), training=training)
        sampled = self.sampler(posterior, training=training)
        decoded = self.decoder(sampled["latents"], training=training)
        return {"reconstruction": self.decoder_outputs_to_images(decoded), **sampled}

    def compute_loss_terms(self, images, outputs):
        reconstruction = outputs["reconstruction"]
        # P, the number of pixel values of one image, puts the KL on the
        # per-pixel scale of the reconstruction MSE.
        pixel_values = ops.cast(ops.size(reconstruction), "float32") / ops.cast(
            ops.shape(reconstruction)[0], "float32"
        )
        return {
            "reconstruction_loss": ops.mean(self.reconstruction_loss(images, reconstruction)),
            "kl_loss": self.kl_weight * ops.mean(outputs["kl"]) / pixel_values,
        }

    @property
    def extra_metrics(self):
        return [self.kl_tracker]

    def update_extra_metrics(self, outputs):
        self.kl_tracker.update_state(outputs["kl"])

    # -- images <-> latents ---------------------------------------------------

    def encode(self, images):
        """Images to the posterior q(z|x), a `DiagonalGaussian` over latents
        `(B, h, w, D)`: `.mode()` or `.sample(seed)` gives what `decode`
        takes."""
        self.build_for(images)
        return self.sampler.posterior(self.encoder(self.encoder_inputs(images)))

    def decode(self, latents):
        """Float latents `(B, h, w, D)` to float32 images on the [0, 1] scale."""
        self.check_latents(latents)
        return self.decoder_outputs_to_images(self.decoder(ops.cast(latents, self.compute_dtype)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in self.SUBLAYER_NAMES
            }
        )
        config["kl_weight"] = self.kl_weight
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls.SUBLAYER_NAMES:
            if config.get(name) is not None:  # optional sublayers of subclasses
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
