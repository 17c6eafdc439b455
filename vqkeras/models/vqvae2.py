import keras
from keras import layers, ops

from vqkeras.codes import CodeGrid
from vqkeras.layers.quantizer import Quantizer
from vqkeras.layers.sub_pixel_upsampling import SubPixelUpsampling
from vqkeras.models.autoencoder_model import AutoencoderModel

_PARTS = (
    "bottom_encoder",
    "top_encoder",
    "top_decoder",
    "decoder",
    "bottom_quantizer",
    "top_quantizer",
)


@keras.saving.register_keras_serializable(package="vqkeras")
class VQVAE2(AutoencoderModel):
    """VQ-VAE-2: a two-level hierarchy of code grids, top (coarse) and bottom.

    The data flow of Razavi et al. (2019, figure 2a), e.g. for 32x32 images
    with a bottom grid of 8x8 and a top grid of 4x4:

        features = bottom_encoder(images)                       # (B, 8, 8, C)
        top      = top_quantizer(top_encoder(features))         # (B, 4, 4, Dt)
        bottom   = bottom_quantizer(
            bottom_projection(concat(features, top_decoder(top))))  # (B, 8, 8, Db)
        images'  = decoder(concat(top_upsampling(top), bottom))

    The bottom codes are chosen given the decoded top, so they encode what
    the top level missed (the local detail); the decoder sees both.
    `bottom_projection` (a 1x1 convolution to Db channels) and
    `top_upsampling` (one `SubPixelUpsampling` to Dt channels per factor of 2
    between the grids) are created by the model.

    The training loss is the reconstruction MSE plus the loss terms of both
    quantizers, prefixed by level. Fit logs: `loss`, `reconstruction_loss`,
    `top_commitment_loss`, `bottom_commitment_loss` (plus
    `top_codebook_loss` / `bottom_codebook_loss` with `VectorQuantizer`s),
    and `top_perplexity`, `top_codebook_usage`, `bottom_perplexity`,
    `bottom_codebook_usage` over the epoch.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions
    (`predict`, `decode`, `decode_indices`) are float32 on the [0, 1] scale,
    not clipped.

    Args:
        bottom_encoder: a layer from images on the [-1, 1] scale to features
            at the bottom resolution, with a `downsampling_factor` attribute,
            e.g. `ConvEncoder`.
        top_encoder: a layer from those features to the top latents
            `(B, ht, wt, Dt)`, with a `downsampling_factor` attribute (a power
            of 2), e.g. `ConvEncoder(latent_dim=Dt, channels=(C,))`.
        top_decoder: a layer from top latents back to the bottom resolution
            (the conditioning of the bottom level), with an
            `upsampling_factor` attribute equal to the top encoder's
            downsampling factor, e.g. `ConvDecoder(output_channels=C,
            channels=(C,))`.
        decoder: a layer from the concatenated `(B, hb, wb, Dt + Db)` latents
            to images on the [-1, 1] scale with an `output_channels`
            attribute, e.g. `ConvDecoder`.
        bottom_quantizer: a `vqkeras.layers.Quantizer` with one index per
            position (e.g. `EMAVectorQuantizer`) of dimension Db.
        top_quantizer: a `vqkeras.layers.Quantizer` with one index per
            position whose `embedding_dim` Dt is the top encoder's
            `latent_dim`.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = VQVAE2(
        bottom_encoder=ConvEncoder(latent_dim=64, channels=(64, 128)),  # 32 -> 8
        top_encoder=ConvEncoder(latent_dim=32, channels=(128,)),        # 8 -> 4
        top_decoder=ConvDecoder(output_channels=64, channels=(128,)),   # 4 -> 8
        decoder=ConvDecoder(output_channels=3, channels=(128, 64)),     # 8 -> 32
        bottom_quantizer=EMAVectorQuantizer(512, 32),
        top_quantizer=EMAVectorQuantizer(512, 32),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)  # uint8 (N, 32, 32, 3)
    codes = model.encode_indices(x_test[:8])   # {"top": (8, 4, 4), "bottom": (8, 8, 8)}
    images = model.decode_indices(codes)       # float32 (8, 32, 32, 3)
    ```

    Reference:
        Razavi et al., "Generating Diverse High-Fidelity Images with
        VQ-VAE-2", 2019.
    """

    def __init__(
        self,
        bottom_encoder,
        top_encoder,
        top_decoder,
        decoder,
        bottom_quantizer,
        top_quantizer,
        **kwargs,
    ):
        for quantizer, role in ((bottom_quantizer, "bottom"), (top_quantizer, "top")):
            if not isinstance(quantizer, Quantizer) or len(quantizer.index_shape((1, 1))) != 1:
                raise TypeError(
                    f"`{role}_quantizer` must be a vqkeras.layers.Quantizer with one index per "
                    f"position (e.g. EMAVectorQuantizer). Received: {type(quantizer).__name__}"
                )
        for layer, attribute, role in (
            (bottom_encoder, "downsampling_factor", "bottom_encoder"),
            (top_encoder, "downsampling_factor", "top_encoder"),
            (top_decoder, "upsampling_factor", "top_decoder"),
            (decoder, "output_channels", "decoder"),
        ):
            if not isinstance(layer, keras.layers.Layer) or not hasattr(layer, attribute):
                example = "ConvEncoder" if "encoder" in role else "ConvDecoder"
                raise TypeError(
                    f"`{role}` must be a Keras layer with a `{attribute}` attribute "
                    f"(e.g. vqkeras.layers.{example}). Received: {layer!r}"
                )
        top_factor = top_encoder.downsampling_factor
        if top_factor < 2 or top_factor & (top_factor - 1):
            raise ValueError(
                "The top encoder's downsampling_factor must be a power of 2, at least 2. "
                f"Received: {top_factor}"
            )
        if top_decoder.upsampling_factor != top_factor:
            raise ValueError(
                f"The top decoder's upsampling_factor ({top_decoder.upsampling_factor}) must "
                f"equal the top encoder's downsampling_factor ({top_factor})."
            )
        bottom_factor = bottom_encoder.downsampling_factor
        if getattr(decoder, "upsampling_factor", bottom_factor) != bottom_factor:
            raise ValueError(
                f"The decoder's upsampling_factor ({decoder.upsampling_factor}) must equal "
                f"the bottom encoder's downsampling_factor ({bottom_factor})."
            )
        latent_dim = getattr(top_encoder, "latent_dim", top_quantizer.embedding_dim)
        if latent_dim != top_quantizer.embedding_dim:
            raise ValueError(
                f"The top encoder's latent_dim ({latent_dim}) must equal the top quantizer's "
                f"embedding_dim ({top_quantizer.embedding_dim})."
            )
        loss_names = [
            f"{level}_{name}"
            for level, quantizer in (("top", top_quantizer), ("bottom", bottom_quantizer))
            for name in quantizer.loss_names
        ]
        super().__init__(loss_names=("reconstruction_loss", *loss_names), **kwargs)
        self.bottom_encoder = bottom_encoder
        self.top_encoder = top_encoder
        self.top_decoder = top_decoder
        self.decoder = decoder
        self.bottom_quantizer = bottom_quantizer
        self.top_quantizer = top_quantizer
        self.bottom_projection = layers.Conv2D(
            bottom_quantizer.embedding_dim, 1, name="bottom_projection", dtype=self.dtype_policy
        )
        self.top_upsampling = [
            SubPixelUpsampling(
                top_quantizer.embedding_dim, name=f"top_upsampling_{i}", dtype=self.dtype_policy
            )
            for i in range(top_factor.bit_length() - 1)
        ]
        self.level_metrics = {
            level: quantizer.code_metrics(prefix=f"{level}_")
            for level, quantizer in (("top", top_quantizer), ("bottom", bottom_quantizer))
        }

    @property
    def image_channels(self):
        return self.decoder.output_channels

    @property
    def downsampling_factor(self):
        """Factor from the images to the top grid."""
        return self.bottom_encoder.downsampling_factor * self.top_encoder.downsampling_factor

    def sublayer_build_shapes(self, input_shape):
        features = self.bottom_encoder.compute_output_shape(input_shape)
        top = self.top_encoder.compute_output_shape(features)
        conditioning = self.top_decoder.compute_output_shape(top)
        bottom = features[:-1] + (self.bottom_quantizer.embedding_dim,)
        steps = [
            (self.bottom_encoder, input_shape),
            (self.top_encoder, features),
            (self.top_quantizer, top),
            (self.top_decoder, top),
            (self.bottom_projection, features[:-1] + (features[-1] + conditioning[-1],)),
            (self.bottom_quantizer, bottom),
        ]
        shape = top
        for upsampling in self.top_upsampling:
            steps.append((upsampling, shape))
            shape = upsampling.compute_output_shape(shape)
        steps.append((self.decoder, bottom[:-1] + (shape[-1] + bottom[-1],)))
        return steps

    def _quantize(self, images, training):
        """Both quantizer outputs, top first: the bottom codes depend on the top."""
        features = self.bottom_encoder(self.encoder_inputs(images), training=training)
        top = self.top_quantizer(self.top_encoder(features, training=training), training=training)
        conditioning = self.top_decoder(top["quantized"], training=training)
        bottom_latents = self.bottom_projection(ops.concatenate([features, conditioning], axis=-1))
        bottom = self.bottom_quantizer(bottom_latents, training=training)
        return top, bottom

    def _decode(self, top, bottom, training=False):
        upsampled = top
        for upsampling in self.top_upsampling:
            upsampled = upsampling(upsampled)
        decoded = self.decoder(ops.concatenate([upsampled, bottom], axis=-1), training=training)
        return self.decoder_outputs_to_images(decoded)

    def compute_outputs(self, images, training=False):
        top, bottom = self._quantize(images, training)
        outputs = {
            "reconstruction": self._decode(top["quantized"], bottom["quantized"], training),
        }
        for level, quantized in (("top", top), ("bottom", bottom)):
            for name, value in quantized.items():
                outputs[f"{level}_{name}"] = value
        return outputs

    def compute_loss_terms(self, images, outputs):
        terms = {
            "reconstruction_loss": ops.mean(
                self.reconstruction_loss(images, outputs["reconstruction"])
            )
        }
        for name in self.loss_names[1:]:
            terms[name] = ops.mean(outputs[name])
        return terms

    @property
    def extra_metrics(self):
        return [metric for level in self.level_metrics.values() for metric in level.metrics]

    def update_extra_metrics(self, outputs):
        for level, metrics in self.level_metrics.items():
            metrics.update_state(outputs[f"{level}_indices"])

    def code_grids(self, image_shape=None):
        image_shape = self.built_image_shape(image_shape)
        features = self.bottom_encoder.compute_output_shape((None, *image_shape))
        top = self.top_encoder.compute_output_shape(features)
        return (
            CodeGrid("top", tuple(top[1:-1]), self.top_quantizer.num_embeddings),
            CodeGrid(
                "bottom",
                tuple(features[1:-1]),
                self.bottom_quantizer.num_embeddings,
                conditioned_on="top",
            ),
        )

    # -- images <-> latents <-> indices ---------------------------------------

    def encode(self, images):
        """Images to quantized latents `{"top": (B, ht, wt, Dt), "bottom": (B, hb, wb, Db)}`:
        what `decode` takes."""
        self.build_for(images)
        top, bottom = self._quantize(images, training=False)
        return {"top": top["quantized"], "bottom": bottom["quantized"]}

    def decode(self, top, bottom):
        """Quantized latents (top and bottom grids) to float32 images in [0, 1]."""
        return self._decode(top, bottom)

    def encode_indices(self, images):
        """Images to int32 code grids `{"top": (B, ht, wt), "bottom": (B, hb, wb)}`."""
        self.build_for(images)
        top, bottom = self._quantize(images, training=False)
        return {"top": top["indices"], "bottom": bottom["indices"]}

    def decode_indices(self, codes):
        """Int code grids `{"top": (B, ht, wt), "bottom": (B, hb, wb)}`, as
        `encode_indices` gives them, to float32 images in [0, 1]."""
        if not isinstance(codes, dict) or set(codes) != {"top", "bottom"}:
            received = sorted(codes) if isinstance(codes, dict) else type(codes).__name__
            raise ValueError(
                'Expected a dict of code grids {"top": ..., "bottom": ...}, as encode_indices '
                f"gives. Received: {received}"
            )
        top, bottom = codes["top"], codes["bottom"]
        top_shape, bottom_shape = tuple(top.shape), tuple(bottom.shape)
        for name, shape in (("top", top_shape), ("bottom", bottom_shape)):
            if len(shape) != 3:
                raise ValueError(
                    f"Expected {name} indices of shape (batch, height, width). "
                    f"Received shape={shape}."
                )
        factor = self.top_encoder.downsampling_factor
        expected = (top_shape[0], top_shape[1] * factor, top_shape[2] * factor)
        if bottom_shape != expected:
            raise ValueError(
                f"Expected bottom indices of shape {expected}: the top grid {top_shape} "
                f"upsampled {factor}x. Received shape={bottom_shape}."
            )
        top_latents = self.top_quantizer.indices_to_codes(top)
        bottom_latents = self.bottom_quantizer.indices_to_codes(bottom)
        return self.decode(
            ops.cast(top_latents, self.compute_dtype), ops.cast(bottom_latents, self.compute_dtype)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {name: keras.saving.serialize_keras_object(getattr(self, name)) for name in _PARTS}
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in _PARTS:
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
