import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.models.loss_terms_model import LossTermsModel


def check_encoder_decoder(encoder, decoder):
    """Raises `TypeError` unless both are Keras layers with the attributes the
    families rely on (`downsampling_factor`, `output_channels`)."""
    for layer, attribute, role in (
        (encoder, "downsampling_factor", "encoder"),
        (decoder, "output_channels", "decoder"),
    ):
        if not isinstance(layer, keras.layers.Layer) or not hasattr(layer, attribute):
            raise TypeError(
                f"`{role}` must be a Keras layer with a `{attribute}` attribute "
                f"(e.g. vqkeras.layers.Conv{role.capitalize()}). Received: {layer!r}"
            )


class AutoencoderModel(LossTermsModel):
    """Base class of the image autoencoder families.

    A family implements, and never touches backend code:
    - `compute_outputs(images, training)`: a dict of outputs with
      `"reconstruction"`;
    - `compute_loss_terms(images, outputs)`: a dict of scalar loss terms,
      already weighted, whose names were given to `__init__` as `loss_names`;
      their sum is the training loss;
    - `image_channels` and `downsampling_factor`, for input checks;
    - optionally `extra_metrics` and `update_extra_metrics(outputs)`.

    Training comes from `LossTermsModel`: `compile(optimizer=...)` then
    `fit(...)` on TensorFlow, JAX or PyTorch, with every term logged by name.
    Datasets of `(images, labels)` are accepted; the labels are ignored.

    Pixel range: images are uint8 in [0, 255] or floats in [0, 1]. Inside, the
    encoder sees them scaled to [-1, 1]; reconstructions and the
    reconstruction loss (mean squared error per pixel value) are on the
    [0, 1] scale, so PSNR = -10 log10(reconstruction_loss).
    """

    @property
    def image_channels(self):
        raise NotImplementedError

    @property
    def downsampling_factor(self):
        raise NotImplementedError

    def compute_outputs(self, images, training=False):
        raise NotImplementedError

    def compute_loss_terms(self, images, outputs):
        raise NotImplementedError

    def compute_losses(self, data, training=False):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        # The TensorFlow trainer builds nothing before tracing the step.
        self.build_for(images)
        outputs = self.compute_outputs(images, training=training)
        return self.compute_loss_terms(images, outputs), outputs

    def call(self, images, training=None):
        return self.compute_outputs(images, training=training)["reconstruction"]

    def code_grids(self, image_shape=None):
        """The grids of integer codes of images of `image_shape` `(H, W, C)`
        (default: the shape the model was built for), as `vqkeras.codes.CodeGrid`s;
        empty for a family with continuous latents."""
        return ()

    def built_image_shape(self, image_shape=None):
        """`image_shape` `(H, W, C)`, or the one the model was built for."""
        if image_shape is None:
            input_shape = (self.get_build_config() or {}).get("input_shape")
            if input_shape is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' is not built: pass the image_shape."
                )
            image_shape = input_shape[1:]
        return tuple(image_shape)

    def check_latents(self, latents):
        """Raises unless `latents` are floats `(B, h, w, latent_dim)`: what a
        family with continuous latents decodes."""
        dtype = validation.dtype_of(latents)
        shape = tuple(latents.shape)
        if "float" not in dtype:
            raise TypeError(f"Expected float latents. Received dtype={dtype}.")
        if len(shape) != 4 or shape[-1] != self.latent_dim:
            raise ValueError(
                f"Expected latents of shape (batch, height, width, {self.latent_dim}). "
                f"Received shape={shape}."
            )

    def sublayer_build_shapes(self, input_shape):
        """The `(layer, input_shape)` pairs that build the family's sublayers,
        in order, for images of `input_shape`."""
        raise NotImplementedError

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        validation.check_image_batch(
            keras.KerasTensor(input_shape), self.image_channels, self.downsampling_factor
        )
        for layer, shape in self.sublayer_build_shapes(input_shape):
            if not layer.built:
                layer.build(shape)

    def build_for(self, images):
        """Builds the model for a batch like `images`, if not built yet."""
        if not self.built:
            self.build(tuple(images.shape))

    def check_images(self, images):
        """Raises a clear error unless `images` suit this model (the values
        too, for NumPy arrays: finite, and floats in [0, 1])."""
        validation.check_image_batch(images, self.image_channels, self.downsampling_factor)
        validation.check_pixel_values(images)

    def images_to_unit_range(self, images):
        """uint8 [0, 255] or float [0, 1] images as float32 in [0, 1]."""
        self.check_images(images)
        # As a tensor whatever comes in: the backend's rounding, the same in
        # `predict`, `encode` and training.
        return ops.cast(validation.to_unit_range(ops.convert_to_tensor(images)), "float32")

    def encoder_inputs(self, images):
        """Images scaled to [-1, 1] in the compute dtype, as encoders expect."""
        return ops.cast(self.images_to_unit_range(images) * 2.0 - 1.0, self.compute_dtype)

    @staticmethod
    def decoder_outputs_to_images(decoded):
        """Decoder outputs on the [-1, 1] scale to float32 images in [0, 1]."""
        return (ops.cast(decoded, "float32") + 1.0) / 2.0

    def reconstruction_loss(self, images, reconstruction):
        """Per-sample mean squared error on the [0, 1] scale."""
        error = ops.square(reconstruction - self.images_to_unit_range(images))
        return ops.mean(error, axis=(1, 2, 3))

    def _check_array_input(self, x):
        # Arrays are checked before Keras converts them, so a bad dtype or
        # shape fails here with a clear message rather than inside a backend.
        if isinstance(x, (np.ndarray, list, tuple)):
            self.check_images(x)

    def fit(self, x=None, *args, **kwargs):
        self._check_array_input(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_array_input(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_array_input(x)
        return super().predict(x, *args, **kwargs)
