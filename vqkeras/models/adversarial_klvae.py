import keras

from vqkeras.models.adversarial import ADVERSARIAL_SUBLAYERS, AdversarialTraining
from vqkeras.models.klvae import KLVAE


@keras.saving.register_keras_serializable(package="vqkeras")
class AdversarialKLVAE(AdversarialTraining, KLVAE):
    """A KL-VAE trained with perceptual and adversarial losses: the
    AutoencoderKL recipe of latent diffusion.

    A `KLVAE` (same encoder, Gaussian posterior, decoder, `kl_weight`,
    `scaling_factor` and latent API: `encode`, `decode`, `encode_scaled`,
    `decode_scaled`) whose reconstructions are also judged by a
    discriminator, which trains at the same time with its own optimizer.
    The adversarial and perceptual training is `VQGAN`'s (see there for
    every term, log and argument): an L1 (default) or L2
    `reconstruction_loss`, `kl_loss` and `kl` as in `KLVAE`, then
    `perceptual_loss`, `generator_loss` (adaptively weighted at the
    decoder's last kernel), `discriminator_loss`, optional `lecam_loss`,
    and the logs `adaptive_weight`, `real_logits` and `fake_logits`.
    Compile with `compile(optimizer=..., discriminator_optimizer=...)`.

    Inference: `as_klvae()` gives a plain `KLVAE` sharing the encoder,
    sampler and decoder: what `save_to_preset` saves unless asked for the
    training parts too.

    Args:
        encoder: as in `KLVAE`, to means and log-variances.
        decoder: as in `KLVAE`; the adaptive weight is measured at its last
            trainable variable of rank >= 2.
        discriminator: a layer from images on the [-1, 1] scale to logits,
            e.g. `PatchDiscriminator`.
        perceptual_loss: a `PerceptualLoss`, or None for no perceptual term.
        **kwargs: `KLVAE`'s (`kl_weight`, `scaling_factor`, `shift_factor`,
            `sampler`), `VQGAN`'s adversarial options (`pixel_loss`,
            `perceptual_weight`, `adversarial_weight`,
            `discriminator_start`, `adversarial_loss`, `lecam_weight`,
            `lecam_decay`) and base model keyword arguments.

    Example:

    ```python
    model = vqkeras.models.AdversarialKLVAE(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=2 * 4, channels=(64, 128)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=3, channels=(128, 64)),
        discriminator=vqkeras.layers.PatchDiscriminator(filters=64, num_layers=2),
        perceptual_loss=vqkeras.layers.PerceptualLoss.from_classifier("cifar10_classifier"),
        discriminator_start=5000,
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.9))
    model.fit(x_train, epochs=20, batch_size=64)  # uint8 (N, 32, 32, 3)
    model.save_to_preset("my_klvae")              # a KLVAE preset
    ```

    Reference:
        Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion
        Models", CVPR 2022 (section 3.1 and appendix G: the autoencoder's
        perceptual and patch-based adversarial losses).
    """

    SUBLAYER_NAMES = (*KLVAE.SUBLAYER_NAMES, *ADVERSARIAL_SUBLAYERS)

    def __init__(self, encoder, decoder, discriminator, perceptual_loss=None, **kwargs):
        super().__init__(
            encoder,
            decoder,
            discriminator=discriminator,
            perceptual_loss=perceptual_loss,
            **kwargs,
        )

    def as_klvae(self, name=None):
        """A `KLVAE` sharing this model's encoder, sampler and decoder (the
        same variables), with its `kl_weight`, `scaling_factor` and
        `shift_factor`: what
        inference needs, without the discriminator, the perceptual loss's
        feature network or the training state."""
        model = KLVAE(
            self.encoder,
            self.decoder,
            kl_weight=self.kl_weight,
            scaling_factor=self.scaling_factor,
            shift_factor=self.shift_factor,
            sampler=self.sampler,
            name=name or f"{self.name}_klvae",
        )
        return self._built_like_self(model)

    as_inference_model = as_klvae
