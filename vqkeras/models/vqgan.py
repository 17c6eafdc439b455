import keras

from vqkeras.models.adversarial import ADVERSARIAL_SUBLAYERS, AdversarialTraining
from vqkeras.models.vqvae import VQVAE


@keras.saving.register_keras_serializable(package="vqkeras")
class VQGAN(AdversarialTraining, VQVAE):
    """VQGAN: a VQ-VAE trained with perceptual and adversarial losses.

    A `VQVAE` (same encoder, quantizer, decoder, codes API: `encode`,
    `decode`, `encode_indices`, `decode_indices`, `code_grids`) whose
    reconstructions are also judged by a discriminator, which trains at the
    same time with its own optimizer. The loss terms, all logged by name:

    - `reconstruction_loss`: per-pixel L1 (default) or L2 error on the
      [0, 1] scale (`pixel_loss`);
    - the quantizer's terms (e.g. `commitment_loss`);
    - `perceptual_loss` (with a `perceptual_loss` layer):
      `perceptual_weight` times its distance;
    - `generator_loss`: the adversarial loss of the reconstructions (hinge:
      `-D(fake)`), 0 before `discriminator_start` training steps; in
      training steps it is scaled by the adaptive weight
      `adversarial_weight * clip(||grad L_rec|| / (||grad L_gen|| + 1e-4),
      0, 1e4)`, both gradients taken at the decoder's last kernel, L_rec
      being the reconstruction plus perceptual terms; so the adversarial
      gradient reaching the decoder is as large as the reconstruction's
      times `adversarial_weight`, whatever the scale of the losses
      (taming-transformers' L1 loss is on the [-1, 1] scale, twice this
      one: the same `disc_weight` gives the same balance; its perceptual
      term weighs half as much against it as here);
    - `discriminator_loss`: the discriminator's loss (hinge or
      non-saturating) on real images and reconstructions, the latter with
      a stopped gradient, 0 before `discriminator_start` steps;
    - `lecam_loss` (if `lecam_weight > 0`): `lecam_weight` times the LeCAM
      penalty, against moving averages of the real and fake logits.

    Extra logs: `adaptive_weight` (the factor of `generator_loss` in
    training steps; 0 before `discriminator_start`), `real_logits` and
    `fake_logits` (mean discriminator logits: a discriminator that wins too
    clearly, real far above fake, often precedes the GAN wrecking the
    reconstructions), the code `perplexity` and `codebook_usage`.

    Optimizer groups: "generator" (the encoder, quantizer and decoder)
    minimises the reconstruction, quantizer, perceptual and generator terms;
    "discriminator" (the discriminator's variables only) minimises
    `discriminator_loss` and `lecam_loss`. Compile with one optimizer each:
    `model.compile(optimizer=..., discriminator_optimizer=...)` (the second
    defaults to a copy of the first). Each group's optimizer updates only its
    own variables, so the generator term never moves the discriminator.

    Training steps are counted in the non-trainable variable `train_steps`
    (saved with the weights, so a resumed run keeps its place before or
    after `discriminator_start`).

    Inference: `as_vqvae()` gives a plain `VQVAE` sharing the encoder,
    quantizer and decoder, without the discriminator, the feature network
    or the training state: what `save_to_preset` saves unless asked for
    the training parts too.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions are
    float32 on the [0, 1] scale, not clipped. The discriminator and the
    perceptual loss see images on the [-1, 1] scale.

    Args:
        encoder: a layer from images on the [-1, 1] scale to latents
            `(B, h, w, D)` with a `downsampling_factor` attribute, e.g.
            `ConvEncoder`.
        decoder: a layer from latents to images on the [-1, 1] scale with an
            `output_channels` attribute, e.g. `ConvDecoder`. The adaptive
            weight is measured at its last trainable variable of rank >= 2
            (`ConvDecoder`: the output convolution's kernel).
        quantizer: a `vqkeras.layers.Quantizer` whose `embedding_dim` is the
            encoder's latent size D.
        discriminator: a layer from images on the [-1, 1] scale to logits
            `(B, ...)`, e.g. `PatchDiscriminator`.
        perceptual_loss: a `PerceptualLoss`, or None for no perceptual term.
        pixel_loss: "l1" or "l2", the reconstruction error.
        perceptual_weight: weight of the perceptual term, >= 0.
        adversarial_weight: factor of the adaptive weight, >= 0 (0 turns
            the adversarial loss of the autoencoder off; the keyword
            `discriminator_weight` still works, deprecated).
        discriminator_start: training steps before the adversarial terms
            count (taming-transformers waits for the autoencoder to
            reconstruct well first: tens of thousands of steps on ImageNet).
        adversarial_loss: "hinge" or "non_saturating", for the
            discriminator and the generator.
        lecam_weight: weight of the LeCAM penalty, >= 0 (0: none).
        lecam_decay: decay of the logits' moving averages, in [0, 1).
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = vqkeras.models.VQGAN(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=64, channels=(64, 128)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=3, channels=(128, 64)),
        quantizer=vqkeras.layers.EMAVectorQuantizer(512, 64),
        discriminator=vqkeras.layers.PatchDiscriminator(filters=64, num_layers=2),
        perceptual_loss=vqkeras.layers.PerceptualLoss.from_vgg16(),
        discriminator_start=5000,
        lecam_weight=0.001,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.9),
        discriminator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.9),
    )
    model.fit(x_train, epochs=20, batch_size=64)  # uint8 (N, 32, 32, 3)
    model.save_to_preset("my_vqgan")   # a VQVAE preset: codes and decoding
    ```

    Reference:
        Esser et al., "Taming Transformers for High-Resolution Image
        Synthesis", CVPR 2021 (equations 4-7); Tseng et al., "Regularizing
        Generative Adversarial Networks under Limited Data", CVPR 2021
        (LeCAM).
    """

    SUBLAYER_NAMES = (*VQVAE.SUBLAYER_NAMES, *ADVERSARIAL_SUBLAYERS)

    def __init__(self, encoder, decoder, quantizer, discriminator, perceptual_loss=None, **kwargs):
        super().__init__(
            encoder,
            decoder,
            quantizer,
            discriminator=discriminator,
            perceptual_loss=perceptual_loss,
            **kwargs,
        )

    def as_vqvae(self, name=None):
        """A `VQVAE` sharing this model's encoder, quantizer and decoder (the
        same variables): what inference needs, without the discriminator,
        the perceptual loss's feature network or the training state. Save it
        as a preset (`save_to_preset`) or a `.keras` file."""
        model = VQVAE(self.encoder, self.decoder, self.quantizer, name=name or f"{self.name}_vqvae")
        return self._built_like_self(model)

    as_inference_model = as_vqvae
