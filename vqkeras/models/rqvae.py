import keras

from vqkeras.layers.residual_vector_quantizer import ResidualVectorQuantizer
from vqkeras.models.vqvae import VQVAE


@keras.saving.register_keras_serializable(package="vqkeras")
class RQVAE(VQVAE):
    """RQ-VAE: encoder, residual vector quantizer, decoder.

    Each latent vector becomes a stack of `depth` codes, coarse to fine: the
    first k codes of every position decode to a coarser image, all of them
    to the full reconstruction. The training loss is the reconstruction MSE
    plus the quantizer's loss terms, summed over the levels. It is a `VQVAE`
    whose quantizer stacks the levels: `encode_indices` returns int32 codes
    `(B, h, w, depth)`, and `decode_indices` takes the first k <= depth of
    them. Fit logs:
    `loss`, `reconstruction_loss`, [`codebook_loss`], `commitment_loss`, and
    per level l = 0..depth-1 the codebook `perplexity_l` and
    `codebook_usage_l` (fraction of the codes used) over the epoch.

    Pixel range: uint8 in [0, 255] or floats in [0, 1]; reconstructions
    (`predict`, `decode`, `decode_indices`) are float32 on the [0, 1] scale,
    not clipped.

    Args:
        encoder: a layer from images on the [-1, 1] scale to latents
            `(B, h, w, D)` with a `downsampling_factor` attribute, e.g.
            `ConvEncoder`.
        decoder: a layer from latents to images on the [-1, 1] scale with an
            `output_channels` attribute, e.g. `ConvDecoder`.
        quantizer: a `ResidualVectorQuantizer` whose `embedding_dim` is the
            encoder's latent size D.
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    model = RQVAE(
        encoder=ConvEncoder(latent_dim=64, channels=(64, 128)),
        decoder=ConvDecoder(output_channels=3, channels=(128, 64)),
        quantizer=ResidualVectorQuantizer(EMAVectorQuantizer(512, 64), depth=4),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=5, batch_size=128)  # uint8 (N, 32, 32, 3)
    codes = model.encode_indices(x_test[:8])      # int32 (8, 8, 8, 4)
    coarse = model.decode_indices(codes[..., :2])  # first 2 levels only
    ```

    Reference:
        Lee et al., "Autoregressive Image Generation using Residual
        Quantization", 2022.
    """

    @staticmethod
    def _check_quantizer(quantizer):
        if not isinstance(quantizer, ResidualVectorQuantizer):
            raise TypeError(
                f"`quantizer` must be a ResidualVectorQuantizer. Received: {type(quantizer).__name__}"
            )

    @property
    def depth(self):
        return self.quantizer.depth
