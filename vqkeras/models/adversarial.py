"""Adversarial and perceptual training of an autoencoder: what `VQGAN` and
`AdversarialKLVAE` add to `VQVAE` and `KLVAE`.

`AdversarialTraining` is a mixin placed before the autoencoder class,
`class VQGAN(AdversarialTraining, VQVAE)`: it adds a discriminator (its own
optimizer group), an optional perceptual loss, an L1 or L2 pixel loss, the
adaptive weight of the adversarial term at the decoder's last kernel,
`discriminator_start`, LeCAM and their logs, and leaves the autoencoder's
own terms (codebook, KL) and latent API to the class it is mixed into.
"""

import keras
from keras import ops

from vqkeras import losses, validation
from vqkeras.layers.perceptual_loss import PerceptualLoss
from vqkeras.models.optimizer_groups import OptimizerGroup

PIXEL_LOSSES = ("l1", "l2")
ADVERSARIAL_LOSSES = tuple(losses.DISCRIMINATOR_LOSSES)
# The adaptive weight's clamp and the guard of its denominator (taming-transformers).
MAX_ADAPTIVE_WEIGHT = 1e4
GRADIENT_NORM_EPSILON = 1e-4
ADVERSARIAL_SUBLAYERS = ("discriminator", "perceptual_loss")


class AdversarialTraining:
    """Mixin: an autoencoder (an `AutoencoderModel` whose `compute_loss_terms`
    gives `reconstruction_loss` from `reconstruction_loss(images,
    reconstruction)`) trained with perceptual and adversarial losses.

    The subclass lists `ADVERSARIAL_SUBLAYERS` among its serialized
    sublayers and defines `as_inference_model(name)`, the plain autoencoder
    sharing its layers, which `save_to_preset` saves. See `VQGAN` for the
    loss terms, logs, optimizer groups and arguments.
    """

    @validation.renamed_arguments(discriminator_weight="adversarial_weight")
    def __init__(
        self,
        *args,
        discriminator,
        perceptual_loss=None,
        pixel_loss="l1",
        perceptual_weight=1.0,
        adversarial_weight=0.8,
        discriminator_start=0,
        adversarial_loss="hinge",
        lecam_weight=0.0,
        lecam_decay=0.99,
        **kwargs,
    ):
        if not isinstance(discriminator, keras.layers.Layer):
            raise TypeError(
                "`discriminator` must be a Keras layer from images to logits "
                f"(e.g. vqkeras.layers.PatchDiscriminator). Received: {discriminator!r}"
            )
        if perceptual_loss is not None and not isinstance(perceptual_loss, PerceptualLoss):
            raise TypeError(
                "`perceptual_loss` must be a vqkeras.layers.PerceptualLoss or None. "
                f"Received: {perceptual_loss!r}"
            )
        options = {
            "pixel_loss": _one_of("pixel_loss", pixel_loss, PIXEL_LOSSES),
            "adversarial_loss": _one_of("adversarial_loss", adversarial_loss, ADVERSARIAL_LOSSES),
            "perceptual_weight": _non_negative("perceptual_weight", perceptual_weight),
            "adversarial_weight": _non_negative("adversarial_weight", adversarial_weight),
            "discriminator_start": validation.non_negative_int(
                "discriminator_start", discriminator_start
            ),
            "lecam_weight": _non_negative("lecam_weight", lecam_weight),
            "lecam_decay": validation.float_in_range(
                "lecam_decay", lecam_decay, 0.0, 1.0, high_inclusive=False
            ),
        }
        super().__init__(*args, **kwargs)
        for option, value in options.items():
            setattr(self, option, value)
        self.loss_names = (
            *self.loss_names,
            *(("perceptual_loss",) if perceptual_loss is not None else ()),
            "generator_loss",
            *self._discriminator_terms,
        )
        self.loss_term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]
        self.discriminator = discriminator
        self.perceptual_loss = perceptual_loss
        self.adaptive_weight_tracker = keras.metrics.Mean(name="adaptive_weight")
        self.real_logits_tracker = keras.metrics.Mean(name="real_logits")
        self.fake_logits_tracker = keras.metrics.Mean(name="fake_logits")
        # Training state, updated inside the training step (backend-neutral:
        # JAX's trainer collects non-trainable assignments). Created here, as
        # no shape decides it: `build` may run twice (deserialization builds
        # from the build config, and callers build again).
        self.train_steps = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="train_steps",
        )
        self.lecam_ema_real = self._state_scalar("lecam_ema_real")
        self.lecam_ema_fake = self._state_scalar("lecam_ema_fake")

    @property
    def _discriminator_terms(self):
        return ("discriminator_loss", *(("lecam_loss",) if self.lecam_weight > 0 else ()))

    # -- structure ------------------------------------------------------------

    @property
    def optimizer_groups(self):
        discriminator_terms = self._discriminator_terms
        generator_terms = tuple(n for n in self.loss_names if n not in discriminator_terms)
        return (
            OptimizerGroup("generator", generator_terms),
            OptimizerGroup("discriminator", discriminator_terms, layers=("discriminator",)),
        )

    def sublayer_build_shapes(self, input_shape):
        shapes = super().sublayer_build_shapes(input_shape)
        return [*shapes, (self.discriminator, input_shape)]

    def build(self, input_shape):
        super().build(input_shape)
        self.last_decoder_kernel  # noqa: B018 (raises now for a decoder without a kernel)

    def _state_scalar(self, name):
        return self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="float32",
            autocast=False,
            trainable=False,
            aggregation="mean",
            name=name,
        )

    @property
    def last_decoder_kernel(self):
        """The variable at which the adaptive weight compares gradient norms:
        the decoder's last trainable variable of rank >= 2."""
        kernels = [v for v in self.decoder.trainable_variables if len(v.shape) >= 2]
        if not kernels:
            raise ValueError(
                f"The decoder '{self.decoder.name}' has no trainable kernel (a variable of "
                "rank >= 2) at which to measure the adaptive weight's gradient norms."
            )
        return kernels[-1]

    # -- losses ---------------------------------------------------------------

    def reconstruction_loss(self, images, reconstruction):
        """Per-sample mean absolute (`pixel_loss="l1"`) or squared error on
        the [0, 1] scale."""
        if self.pixel_loss == "l2":
            return super().reconstruction_loss(images, reconstruction)
        error = ops.abs(ops.subtract(reconstruction, self.images_to_unit_range(images)))
        return ops.mean(error, axis=(1, 2, 3))

    def compute_losses(self, data, training=False):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.build_for(images)
        # `call` (so `predict`) computes `compute_outputs` only: the
        # discriminator and the perceptual loss run for the loss terms.
        outputs = self.compute_outputs(images, training=training)
        outputs.update(self.compute_adversarial_outputs(images, outputs, training=training))
        return self.compute_loss_terms(images, outputs), outputs

    def compute_adversarial_outputs(self, images, outputs, training=False):
        """The discriminator's logits of the images and of their
        reconstructions, the perceptual distance, and the factor (0 or 1) of
        the adversarial terms; counts the training steps and updates LeCAM's
        moving averages in training."""
        real = self.encoder_inputs(images)
        fake = ops.cast(outputs["reconstruction"] * 2.0 - 1.0, self.compute_dtype)
        # One discriminator pass for its own loss: real images and the
        # reconstructions, whose gradient stops here (the discriminator's
        # term must not train the autoencoder).
        both = self.discriminator(
            ops.concatenate([real, ops.stop_gradient(fake)], axis=0), training=training
        )
        batch = ops.shape(real)[0]
        adversarial = {
            "real_logits": ops.cast(both[:batch], "float32"),
            "stopped_fake_logits": ops.cast(both[batch:], "float32"),
            # And one through which the generator's term reaches the autoencoder.
            "fake_logits": ops.cast(self.discriminator(fake, training=training), "float32"),
            "adversarial_factor": self._adversarial_factor(training),
        }
        if self.perceptual_loss is not None:
            adversarial["perceptual_distance"] = self.perceptual_loss(real, fake)
        if training and self.trainable and self.lecam_weight > 0:
            self._update_lecam_averages(
                adversarial["real_logits"], adversarial["stopped_fake_logits"]
            )
        return adversarial

    def _adversarial_factor(self, training):
        """1.0 from the `discriminator_start`-th training step on, else 0.0;
        counts the step when training."""
        steps = ops.convert_to_tensor(self.train_steps)
        factor = ops.cast(steps >= self.discriminator_start, "float32")
        if training and self.trainable:
            self.train_steps.assign(steps + 1)
        return factor

    def _update_lecam_averages(self, real_logits, fake_logits):
        decay = self.lecam_decay
        pairs = ((self.lecam_ema_real, real_logits), (self.lecam_ema_fake, fake_logits))
        for variable, logits in pairs:
            mean = ops.stop_gradient(ops.mean(logits))
            variable.assign(decay * ops.convert_to_tensor(variable) + (1.0 - decay) * mean)

    def compute_loss_terms(self, images, outputs):
        terms = super().compute_loss_terms(images, outputs)
        factor = outputs["adversarial_factor"]
        if self.perceptual_loss is not None:
            terms["perceptual_loss"] = self.perceptual_weight * ops.mean(
                outputs["perceptual_distance"]
            )
        generator_loss = losses.GENERATOR_LOSSES[self.adversarial_loss]
        discriminator_loss = losses.DISCRIMINATOR_LOSSES[self.adversarial_loss]
        terms["generator_loss"] = factor * ops.mean(generator_loss(outputs["fake_logits"]))
        real, fake = outputs["real_logits"], outputs["stopped_fake_logits"]
        terms["discriminator_loss"] = factor * ops.mean(discriminator_loss(real, fake))
        if self.lecam_weight > 0:
            penalty = losses.lecam_penalty(
                real,
                fake,
                ops.convert_to_tensor(self.lecam_ema_real),
                ops.convert_to_tensor(self.lecam_ema_fake),
            )
            terms["lecam_loss"] = factor * self.lecam_weight * ops.mean(penalty)
        return terms

    def adaptive_loss_weights(self, terms, gradient_norm):
        kernel = self.last_decoder_kernel
        reconstruction_terms = [
            name for name in ("reconstruction_loss", "perceptual_loss") if name in terms
        ]
        reconstruction_norm = gradient_norm(reconstruction_terms, kernel)
        generator_norm = gradient_norm(["generator_loss"], kernel)
        weight = ops.clip(
            reconstruction_norm / (generator_norm + GRADIENT_NORM_EPSILON),
            0.0,
            MAX_ADAPTIVE_WEIGHT,
        )
        return {"generator_loss": self.adversarial_weight * weight}

    # -- metrics --------------------------------------------------------------

    @property
    def extra_metrics(self):
        return [
            self.adaptive_weight_tracker,
            self.real_logits_tracker,
            self.fake_logits_tracker,
            *super().extra_metrics,
        ]

    def update_extra_metrics(self, outputs):
        super().update_extra_metrics(outputs)
        self.real_logits_tracker.update_state(ops.mean(outputs["real_logits"]))
        self.fake_logits_tracker.update_state(ops.mean(outputs["stopped_fake_logits"]))
        if "loss_weights" in outputs:
            # Before discriminator_start the generator term is 0 whatever its
            # weight: log the factor it actually gets.
            weight = outputs["loss_weights"]["generator_loss"] * outputs["adversarial_factor"]
            self.adaptive_weight_tracker.update_state(weight)

    # -- inference ------------------------------------------------------------

    def as_inference_model(self, name=None):
        """The plain autoencoder sharing this model's layers (same variables)."""
        raise NotImplementedError

    def _built_like_self(self, model):
        input_shape = (self.get_build_config() or {}).get("input_shape")
        if input_shape is not None:
            model.build(tuple(input_shape))
        return model

    def save_to_preset(self, directory, metadata=None, overwrite=False, training_parts=False):
        """Saves a preset of `as_inference_model()` (under this model's
        name): what inference needs. With `training_parts=True`, this whole
        model instead: discriminator, perceptual feature network and
        training state, to train further from the preset."""
        from vqkeras import presets

        model = self if training_parts else self.as_inference_model(name=self.name)
        return presets.save_to_preset(model, directory, metadata=metadata, overwrite=overwrite)

    # -- serialization --------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pixel_loss": self.pixel_loss,
                "perceptual_weight": self.perceptual_weight,
                "adversarial_weight": self.adversarial_weight,
                "discriminator_start": self.discriminator_start,
                "adversarial_loss": self.adversarial_loss,
                "lecam_weight": self.lecam_weight,
                "lecam_decay": self.lecam_decay,
            }
        )
        return config


def _one_of(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    return value


def _non_negative(name, value):
    return validation.float_in_range(name, value, 0.0, float("inf"), high_inclusive=False)
