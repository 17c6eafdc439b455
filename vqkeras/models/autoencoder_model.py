import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.callbacks import StopOnNaN
from vqkeras.models.trainers import backend_trainer_class


class AutoencoderModel(backend_trainer_class(), keras.Model):
    """Base class of the autoencoder families: the training loop lives here.

    A family implements three things and never touches backend code:
    - `compute_outputs(images, training)`: a dict of outputs with `"reconstruction"`;
    - `compute_loss_terms(images, outputs)`: a dict of scalar loss terms,
      already weighted, whose names were given to `__init__` as `loss_names`;
      their sum is the training loss;
    - optionally `extra_metrics` and `update_extra_metrics(outputs)`.

    `train_step` and `test_step` come from the backend's trainer
    (`vqkeras.models.trainers`), so `compile(optimizer=...)` then `fit(...)`
    trains the model on TensorFlow, JAX or PyTorch. Every loss term is logged
    by name, next to `loss`, the total.

    Pixel range: images are uint8 in [0, 255] or floats in [0, 1]. Inside, the
    encoder sees them scaled to [-1, 1]; reconstructions and the
    reconstruction loss (mean squared error per pixel value) are on the
    [0, 1] scale, so PSNR = -10 log10(reconstruction_loss).
    """

    def __init__(self, loss_names, **kwargs):
        super().__init__(**kwargs)
        self.loss_names = tuple(loss_names)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.loss_term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]

    # -- what a family provides ------------------------------------------

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

    @property
    def extra_metrics(self):
        return []

    def update_extra_metrics(self, outputs):
        pass

    # -- shared machinery -------------------------------------------------

    @property
    def metrics(self):
        return [self.loss_tracker, *self.loss_term_trackers, *self.extra_metrics]

    def call(self, images, training=None):
        return self.compute_outputs(images, training=training)["reconstruction"]

    def check_images(self, images):
        """Raises a clear error unless `images` suit this model."""
        validation.check_image_batch(images, self.image_channels, self.downsampling_factor)

    def images_to_unit_range(self, images):
        """uint8 [0, 255] or float [0, 1] images as float32 in [0, 1]."""
        self.check_images(images)
        if validation.dtype_of(images) == "uint8":
            return ops.cast(images, "float32") / 255.0
        return ops.cast(images, "float32")

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

    def _images_from_data(self, data):
        # Datasets of (images, labels) are fine: labels are ignored.
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return images

    def build_for(self, images):
        """Builds the model for a batch like `images`, if not built yet."""
        if not self.built:
            self.build(tuple(images.shape))

    def _compute_losses(self, images, training):
        # The TensorFlow trainer builds nothing before tracing the step.
        self.build_for(images)
        outputs = self.compute_outputs(images, training=training)
        terms = self.compute_loss_terms(images, outputs)
        total = sum(terms[name] for name in self.loss_names)
        return total, terms, outputs

    def _update_metrics(self, total, terms, outputs):
        batch_size = ops.cast(ops.shape(outputs["reconstruction"])[0], "float32")
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        for tracker in self.loss_term_trackers:
            tracker.update_state(terms[tracker.name], sample_weight=batch_size)
        self.update_extra_metrics(outputs)
        return {metric.name: metric.result() for metric in self.metrics}

    def _check_array_input(self, x):
        # Arrays are checked before Keras converts them, so a bad dtype or
        # shape fails here with a clear message rather than inside a backend.
        if isinstance(x, np.ndarray):
            self.check_images(x)

    def fit(
        self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs
    ):
        self._check_array_input(x)
        callbacks = list(callbacks or [])
        if not any(isinstance(c, StopOnNaN) for c in callbacks):
            callbacks.append(StopOnNaN())
        return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_array_input(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_array_input(x)
        return super().predict(x, *args, **kwargs)
