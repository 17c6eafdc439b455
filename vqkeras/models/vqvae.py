import keras
from keras import ops

from vqkeras.codes import SINGLE_GRID_NAME, CodeGrid
from vqkeras.layers.quantizer import Quantizer
from vqkeras.models.autoencoder_model import AutoencoderModel, check_encoder_decoder


@keras.saving.register_keras_serializable(package="vqkeras")
class VQVAE(AutoencoderModel):
    """VQ-VAE: encoder, vector quantizer, decoder.

    Works with any `vqkeras.layers.Quantizer`: `VectorQuantizer` (codebook
    learned by gradients; logs `codebook_loss`), `EMAVectorQuantizer`
    (codebook by moving averages), `GumbelQuantizer` (Gumbel-softmax
    samples), or a quantizer without a codebook (`FiniteScalarQuantizer`,
    `LookupFreeQuantizer`). The
    training loss is the reconstruction MSE plus the quantizer's loss terms.
    Fit logs: `loss`, `reconstruction_loss`, the quantizer's terms (e.g.
    [`codebook_loss`], `commitment_loss`), and the code `perplexity` and
    `codebook_usage` (fraction of codes used) over the epoch.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions
    (`predict`, `decode`, `decode_indices`) are float32 on the [0, 1] scale,
    not clipped.

    Args:
        encoder: a layer from images on the [-1, 1] scale to latents
            `(B, h, w, D)` with a `downsampling_factor` attribute, e.g.
            `ConvEncoder`.
        decoder: a layer from latents to images on the [-1, 1] scale with an
            `output_channels` attribute, e.g. `ConvDecoder`.
        quantizer: a `vqkeras.layers.Quantizer` (e.g. `EMAVectorQuantizer`)
            whose `embedding_dim` is the encoder's latent size D.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = vqkeras.models.VQVAE(
        encoder=vqkeras.layers.ConvEncoder(latent_dim=16, channels=(32, 64)),
        decoder=vqkeras.layers.ConvDecoder(output_channels=1, channels=(64, 32)),
        quantizer=vqkeras.layers.EMAVectorQuantizer(128, 16),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)  # uint8 (N, 28, 28, 1)
    codes = model.encode_indices(x_test[:8])      # int32 (8, 7, 7)
    images = model.decode_indices(codes)          # float32 (8, 28, 28, 1)
    ```

    Reference:
        van den Oord et al., "Neural Discrete Representation Learning", 2017.
    """

    # Sublayers serialized in the config (a subclass adds its own).
    SUBLAYER_NAMES = ("encoder", "decoder", "quantizer")

    def __init__(self, encoder, decoder, quantizer, **kwargs):
        self._check_quantizer(quantizer)
        check_encoder_decoder(encoder, decoder)
        latent_dim = getattr(encoder, "latent_dim", quantizer.embedding_dim)
        if latent_dim != quantizer.embedding_dim:
            raise ValueError(
                f"The encoder's latent_dim ({latent_dim}) must equal the quantizer's "
                f"embedding_dim ({quantizer.embedding_dim})."
            )
        super().__init__(loss_names=("reconstruction_loss", *quantizer.loss_names), **kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.quantizer = quantizer
        self.code_metrics = quantizer.code_metrics()

    @staticmethod
    def _check_quantizer(quantizer):
        if not isinstance(quantizer, Quantizer):
            raise TypeError(
                "`quantizer` must be a vqkeras.layers.Quantizer (e.g. EMAVectorQuantizer). "
                f"Received: {type(quantizer).__name__}"
            )

    @property
    def image_channels(self):
        return self.decoder.output_channels

    @property
    def downsampling_factor(self):
        return self.encoder.downsampling_factor

    @property
    def num_embeddings(self):
        return self.quantizer.num_embeddings

    def sublayer_build_shapes(self, input_shape):
        latent_shape = self.encoder.compute_output_shape(input_shape)
        return [
            (self.encoder, input_shape),
            (self.quantizer, latent_shape),
            (self.decoder, latent_shape),
        ]

    def compute_outputs(self, images, training=False):
        latents = self.encoder(self.encoder_inputs(images), training=training)
        quantized = self.quantizer(latents, training=training)
        decoded = self.decoder(quantized["quantized"], training=training)
        return {"reconstruction": self.decoder_outputs_to_images(decoded), **quantized}

    def compute_loss_terms(self, images, outputs):
        terms = {
            "reconstruction_loss": ops.mean(
                self.reconstruction_loss(images, outputs["reconstruction"])
            )
        }
        for name in self.quantizer.loss_names:
            terms[name] = ops.mean(outputs[name])
        return terms

    @property
    def extra_metrics(self):
        return self.code_metrics.metrics

    def update_extra_metrics(self, outputs):
        self.code_metrics.update_state(outputs["indices"])

    def code_grids(self, image_shape=None):
        image_shape = self.built_image_shape(image_shape)
        latent_shape = self.encoder.compute_output_shape((None, *image_shape))
        shape = self.quantizer.index_shape(latent_shape)[1:]
        return (CodeGrid(SINGLE_GRID_NAME, tuple(shape), self.num_embeddings),)

    # -- images <-> latents <-> indices ---------------------------------------

    def encode(self, images):
        """Images to quantized latents `(B, h, w, D)`: what `decode` takes."""
        self.build_for(images)
        latents = self.encoder(self.encoder_inputs(images))
        return self.quantizer(latents)["quantized"]

    def decode(self, latents):
        """Latents `(B, h, w, D)` to float32 images on the [0, 1] scale."""
        return self.decoder_outputs_to_images(self.decoder(latents))

    def encode_indices(self, images):
        """Images to int32 code indices `(B, h, w)` (with the quantizer's own
        trailing axis, if it has one: an RQ-VAE's levels)."""
        self.build_for(images)
        return self.quantizer.inputs_to_indices(self.encoder(self.encoder_inputs(images)))

    def decode_indices(self, indices):
        """Int code indices, as `encode_indices` gives them, in [0, K), to
        float32 images in [0, 1]."""
        shape = tuple(indices.shape)
        expected = self.quantizer.index_shape(
            ("batch", "height", "width", self.quantizer.embedding_dim)
        )
        if len(shape) != len(expected):
            hint = (
                " One grid? Add the batch axis: indices[None]."
                if len(shape) + 1 == len(expected)
                else ""
            )
            raise ValueError(
                f"Expected indices of shape ({', '.join(map(str, expected))}). "
                f"Received shape={shape}.{hint}"
            )
        latents = self.quantizer.indices_to_codes(indices)
        return self.decode(ops.cast(latents, self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in self.SUBLAYER_NAMES
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls.SUBLAYER_NAMES:
            if config.get(name) is not None:  # optional sublayers of subclasses
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
