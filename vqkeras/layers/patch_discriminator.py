import math

import keras
from keras import layers

from vqkeras import validation
from vqkeras.layers.conv2d import Conv2D

NORMALIZATIONS = ("group", None)


@keras.saving.register_keras_serializable(package="vqkeras")
class PatchDiscriminator(layers.Layer):
    """PatchGAN discriminator: one real/fake logit per image patch.

    `num_layers` stride-2 4x4 convolutions, with `filters`, then twice as
    many per layer up to `max_filters`, each followed by LeakyReLU(0.2)
    (and, after the first, a normalization), then a 4x4 convolution to one
    channel. Each logit sees a patch of the image (its receptive field), so
    the discriminator judges local texture and sharpness, what an L1 or L2
    loss blurs.

    Normalization: GroupNormalization (per sample) or none. Unlike the
    BatchNormalization of the original PatchGAN, neither mixes statistics
    between the real and the fake images of a step, so the discriminator
    cannot tell them apart by their batch statistics, and it behaves the same
    in training and inference on every backend.

    Args:
        filters: channels of the first convolution.
        num_layers: stride-2 convolutions; logits come on a grid
            `2 ** num_layers` times smaller than the images.
        max_filters: cap on the channels of any convolution.
        normalization: "group" (GroupNormalization with
            `gcd(32, channels)` groups) or None.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: images `(B, H, W, C)` on the [-1, 1] scale (what the
            autoencoders' encoders see), H and W multiples of
            `2 ** num_layers`.
        training: accepted and ignored: the layer computes the same in
            training and inference.

    Returns:
        Logits `(B, H / 2 ** num_layers, W / 2 ** num_layers, 1)`, in the
        compute dtype: positive means "looks real".

    Example:

    ```python
    discriminator = vqkeras.layers.PatchDiscriminator(filters=64, num_layers=3)
    logits = discriminator(images * 2.0 - 1.0)  # (B, 32, 32, 3) -> (B, 4, 4, 1)
    ```

    Reference:
        Isola et al., "Image-to-Image Translation with Conditional
        Adversarial Networks", CVPR 2017; Esser et al., "Taming Transformers
        for High-Resolution Image Synthesis", CVPR 2021.
    """

    def __init__(self, filters=64, num_layers=3, max_filters=512, normalization="group", **kwargs):
        super().__init__(**kwargs)
        self.filters = validation.positive_int("filters", filters)
        self.num_layers = validation.positive_int("num_layers", num_layers)
        self.max_filters = validation.positive_int("max_filters", max_filters)
        if self.max_filters < self.filters:
            raise ValueError(
                "`max_filters` must be at least `filters`. "
                f"Received: filters={filters}, max_filters={max_filters}"
            )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {list(NORMALIZATIONS)}. "
                f"Received: normalization={normalization!r}"
            )
        self.normalization = normalization
        policy = self.dtype_policy
        self.convolutions, self.normalizations = [], []
        for i in range(self.num_layers):
            channels = min(self.filters * 2**i, self.max_filters)
            self.convolutions.append(
                Conv2D(channels, 4, strides=2, padding="same", name=f"down_{i}", dtype=policy)
            )
            if i > 0 and normalization == "group":
                self.normalizations.append(
                    layers.GroupNormalization(
                        math.gcd(32, channels), epsilon=1e-5, name=f"norm_{i}", dtype=policy
                    )
                )
            else:
                self.normalizations.append(None)
        # Conv2D from vqkeras: a single-filter kernel PyTorch's fallback
        # convolution can differentiate.
        self.output_conv = Conv2D(1, 4, padding="same", name="logits", dtype=policy)

    @property
    def downsampling_factor(self):
        return 2**self.num_layers

    def build(self, input_shape):
        validation.check_image_batch(
            keras.KerasTensor(tuple(input_shape)),
            None,
            self.downsampling_factor,
            name="discriminator inputs",
        )
        shape = tuple(input_shape)
        for convolution, normalization in zip(self.convolutions, self.normalizations):
            convolution.build(shape)
            shape = convolution.compute_output_shape(shape)
            if normalization is not None:
                normalization.build(shape)
        self.output_conv.build(shape)

    def call(self, inputs, training=None):
        # `training` changes nothing (no dropout, no batch statistics); it is
        # accepted for callers that pass it explicitly (`stateless_call`).
        x = inputs
        for convolution, normalization in zip(self.convolutions, self.normalizations):
            x = convolution(x)
            if normalization is not None:
                x = normalization(x)
            x = keras.ops.leaky_relu(x, negative_slope=0.2)
        return self.output_conv(x)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        f = self.downsampling_factor
        scale = lambda size: None if size is None else size // f  # noqa: E731
        return (batch, scale(height), scale(width), 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "num_layers": self.num_layers,
                "max_filters": self.max_filters,
                "normalization": self.normalization,
            }
        )
        return config
