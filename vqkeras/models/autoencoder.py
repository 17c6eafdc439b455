import keras
from keras import ops

from vqkeras.models.autoencoder_model import AutoencoderModel, check_encoder_decoder


@keras.saving.register_keras_serializable(package="vqkeras")
class Autoencoder(AutoencoderModel):
    """Deterministic autoencoder: encoder, then decoder, nothing in between.

    The baseline of the families: no quantization, no noise, no prior on
    the latents. The training loss is the reconstruction MSE alone. Fit
    logs: `loss` and `reconstruction_loss` (equal here).

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions
    (`predict`, `decode`) are float32 on the [0, 1] scale, not clipped.

    Args:
        encoder: a layer from images on the [-1, 1] scale to latents
            `(B, h, w, D)` with a `downsampling_factor` attribute, e.g.
            `ConvEncoder`.
        decoder: a layer from latents `(B, h, w, D)` to images on the
            [-1, 1] scale with an `output_channels` attribute, e.g.
            `ConvDecoder`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = vqkeras.models.Autoencoder(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=4, channels=(32, 64)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=1, channels=(64, 32)),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)  # uint8 (N, 28, 28, 1)
    latents = model.encode(x_test[:8])            # float32 (8, 7, 7, 4)
    images = model.decode(latents)                # float32 (8, 28, 28, 1)
    ```

    Reference:
        Hinton and Salakhutdinov, "Reducing the Dimensionality of Data with
        Neural Networks", Science, 2006.
    """

    def __init__(self, encoder, decoder, **kwargs):
        check_encoder_decoder(encoder, decoder)
        super().__init__(loss_names=("reconstruction_loss",), **kwargs)
        self.encoder = encoder
        self.decoder = decoder

    @property
    def image_channels(self):
        return self.decoder.output_channels

    @property
    def downsampling_factor(self):
        return self.encoder.downsampling_factor

    @property
    def latent_dim(self):
        """D, the channels of the latent grid."""
        f = self.downsampling_factor
        return self.encoder.compute_output_shape((1, f, f, self.image_channels))[-1]

    def sublayer_build_shapes(self, input_shape):
        latent_shape = self.encoder.compute_output_shape(input_shape)
        return [(self.encoder, input_shape), (self.decoder, latent_shape)]

    def compute_outputs(self, images, training=False):
        latents = self.encoder(self.encoder_inputs(images), training=training)
        decoded = self.decoder(latents, training=training)
        return {"reconstruction": self.decoder_outputs_to_images(decoded), "latents": latents}

    def compute_loss_terms(self, images, outputs):
        return {
            "reconstruction_loss": ops.mean(
                self.reconstruction_loss(images, outputs["reconstruction"])
            )
        }

    # -- images <-> latents ---------------------------------------------------

    def encode(self, images):
        """Images to latents `(B, h, w, D)`: what `decode` takes."""
        self.build_for(images)
        return self.encoder(self.encoder_inputs(images))

    def decode(self, latents):
        """Float latents `(B, h, w, D)` to float32 images on the [0, 1] scale."""
        self.check_latents(latents)
        return self.decoder_outputs_to_images(self.decoder(ops.cast(latents, self.compute_dtype)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in ("encoder", "decoder")
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("encoder", "decoder"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
