import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.layers.diffusion_unet import DiffusionUNet
from vqkeras.models.compiled_loops import CompiledSampling
from vqkeras.models.loss_terms_model import LossTermsModel

SAMPLERS = ("euler", "heun")
TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


@keras.saving.register_keras_serializable(package="vqkeras")
class LatentDiffusion(CompiledSampling, LossTermsModel):
    """A flow-matching (rectified flow) prior over continuous latent grids,
    for instance a KL-VAE's scaled latents.

    Objective (rectified flow, as in Stable Diffusion 3): a latent `x0` and
    Gaussian noise are joined by the straight line `x_t = (1 - t) x0 + t
    noise`, `t` in [0, 1]; the denoiser predicts the velocity `v = noise -
    x0` of that line from `x_t`, `t` and the label, and the loss term `mse`
    is the mean squared error over the latent's values. At the optimum the
    denoiser is the velocity field of an ODE that carries the noise
    distribution (t=1) onto the data distribution (t=0), which the samplers
    integrate. Rectified flow rather than eps- or v-prediction diffusion:
    one network output with the same scale at every t, no noise schedule to
    choose, and nearly straight paths that few Euler/Heun steps follow.

    Times: `time_distribution="uniform"` (the default) draws `t ~ U(0, 1)`:
    every time is trained as often as a uniform Euler grid visits it; with
    `"logit_normal"`, `t = sigmoid(n)`, `n ~ N(0, 1)`, which SD3 measured
    best on large images by training the middle times more. Which is better
    for small latent grids is not measured yet.

    Latents: the model's inputs are the latents as diffused, already
    normalised, e.g. `klvae.encode_scaled(images)` (`(z - shift_factor) *
    scaling_factor`, about unit variance); decode samples with
    `klvae.decode_scaled`. The model never applies a scaling itself:
    `latent_scaling` (a dict `{"scaling_factor": s, "shift_factor": b}`, or
    None) only records the autoencoder's factors the latents were scaled
    with, in the config, so that whoever pairs a prior with an autoencoder
    can check they match.

    Classes: with `num_classes`, each training label is replaced by the null
    class (index `num_classes`) with probability `label_dropout`, so the
    denoiser also learns the unconditional velocity, for classifier-free
    guidance.

    Moving average of the weights: the model holds two copies of the
    denoiser, `denoiser` (trained) and `ema_denoiser` (non-trainable, a copy
    at construction). After each training step's optimizer update on every
    backend (`after_train_step`), `ema <- d_n ema + (1 - d_n) w` with `d_n =
    min(ema_decay, n / (n + 10))`, `n` the number of updates before
    (`ema_updates`): the first update copies the weights, and the average
    forgets the early weights fast before reaching `ema_decay`. The average
    lives in ordinary (non-trainable) variables, so `save`, `save_weights`
    and presets keep it, sampling uses it while training goes on, and the
    trained weights are never overwritten (Keras's optimizer `use_ema`
    instead keeps the average in the optimizer, which `save_weights` drops,
    and writes it over the weights at the end of `fit`).

    Sampling: `sample` integrates the ODE from t=1 (noise) to t=0 in
    `num_steps` uniform steps with Euler's method (one denoiser evaluation
    per step) or Heun's (two), with classifier-free guidance `v = v_uncond +
    s (v_cond - v_uncond)`, the conditional and unconditional halves in one
    batch. The loop is one compiled function per backend: a `jax.jit` of
    the stateless loop on JAX, a `tf.function` on TensorFlow (one
    compilation per number of steps, sampler and guidance on or off), an
    eager no-grad loop on PyTorch.

    Args:
        latent_shape: `(h, w, C)` of the latent grids.
        num_classes: number of classes (labels in `[0, num_classes)`), or
            None for an unconditional prior.
        channels: channels of the denoiser's first level.
        channel_multipliers: per level of the denoiser, its channels over
            `channels`.
        num_blocks: resnet blocks per level of the denoiser.
        attention: whether the denoiser has self-attention at its lowest
            resolution.
        dropout: dropout rate in the denoiser's blocks.
        groups: groups of the denoiser's GroupNormalizations.
        label_dropout: probability, in training, of replacing a label by the
            null class; ignored by an unconditional prior.
        ema_decay: decay of the moving average of the weights, in [0, 1).
        time_distribution: `"uniform"` or `"logit_normal"` (see above).
        latent_scaling: None, or a dict with the floats `scaling_factor`
            and `shift_factor` of the autoencoder (a record only).
        **kwargs: base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(x_t, t)` or, for a class-conditional prior, `(x_t, t,
            labels)`: noisy latents `(B, h, w, C)`, times `(B,)` and int
            labels `(B,)` in `[0, num_classes]` (`num_classes`: the null
            class).
        training: whether dropout is on.

    Returns:
        float32 velocities `(B, h, w, C)` of the trained (not averaged)
        denoiser.

    Example:

    ```python
    klvae = vqkeras.models.KLVAE.from_preset("klvae_mnist")
    latents = klvae.encode_scaled(x_train)             # (N, 7, 7, 4)
    prior = vqkeras.models.LatentDiffusion(
        latents.shape[1:], num_classes=10,
        latent_scaling={"scaling_factor": klvae.scaling_factor,
                        "shift_factor": klvae.shift_factor},
    )
    prior.compile(optimizer=keras.optimizers.AdamW(2e-4))
    prior.fit(latents, y_train, epochs=50, batch_size=128)
    z = prior.sample(16, labels=np.arange(16) % 10, num_steps=25, guidance_scale=2.0, seed=0)
    images = klvae.decode_scaled(z)
    ```

    Reference:
        Liu et al., "Flow Straight and Fast: Learning to Generate and
        Transfer Data with Rectified Flow", 2022; Lipman et al., "Flow
        Matching for Generative Modeling", 2022; Esser et al., "Scaling
        Rectified Flow Transformers for High-Resolution Image Synthesis"
        (SD3), 2024; Ho and Salimans, "Classifier-Free Diffusion Guidance",
        2022.
    """

    def __init__(
        self,
        latent_shape,
        num_classes=None,
        channels=64,
        channel_multipliers=(1, 2),
        num_blocks=2,
        attention=True,
        dropout=0.0,
        groups=32,
        label_dropout=0.1,
        ema_decay=0.999,
        time_distribution="uniform",
        latent_scaling=None,
        **kwargs,
    ):
        super().__init__(loss_names=("mse",), **kwargs)
        self.latent_shape = validation.positive_int_tuple("latent_shape", latent_shape)
        if len(self.latent_shape) != 3:
            raise ValueError(
                f"`latent_shape` must be (height, width, channels). Received: {latent_shape!r}"
            )
        self.num_classes = (
            None if num_classes is None else validation.positive_int("num_classes", num_classes)
        )
        self.label_dropout = validation.float_in_range(
            "label_dropout", label_dropout, 0.0, 1.0, high_inclusive=False
        )
        self.ema_decay = validation.float_in_range(
            "ema_decay", ema_decay, 0.0, 1.0, high_inclusive=False
        )
        if time_distribution not in TIME_DISTRIBUTIONS:
            raise ValueError(
                f"`time_distribution` must be one of {TIME_DISTRIBUTIONS}. "
                f"Received: time_distribution={time_distribution!r}"
            )
        self.time_distribution = time_distribution
        self.latent_scaling = self._checked_scaling(latent_scaling)
        denoiser_config = {
            "out_channels": self.latent_shape[-1],
            "channels": channels,
            "channel_multipliers": channel_multipliers,
            "num_blocks": num_blocks,
            "num_classes": self.num_classes,
            "attention": attention,
            "dropout": dropout,
            "groups": groups,
        }
        policy = self.dtype_policy
        self.denoiser = DiffusionUNet(**denoiser_config, name="denoiser", dtype=policy)
        self.ema_denoiser = DiffusionUNet(**denoiser_config, name="ema_denoiser", dtype=policy)
        # Created here, not in `build`, which may run twice (deserialization
        # builds from the build config).
        self.ema_updates = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="ema_updates",
        )
        self.label_dropout_seed = keras.random.SeedGenerator(0, name="label_dropout_seed")
        self.noise_seed = keras.random.SeedGenerator(1, name="noise_seed")

    @staticmethod
    def _checked_scaling(latent_scaling):
        if latent_scaling is None:
            return None
        if not isinstance(latent_scaling, dict) or set(latent_scaling) != {
            "scaling_factor",
            "shift_factor",
        }:
            raise ValueError(
                "`latent_scaling` must be None or a dict with the keys 'scaling_factor' and "
                f"'shift_factor'. Received: latent_scaling={latent_scaling!r}"
            )
        return {
            "scaling_factor": validation.float_in_range(
                "scaling_factor",
                latent_scaling["scaling_factor"],
                0.0,
                np.inf,
                low_inclusive=False,
                high_inclusive=False,
            ),
            "shift_factor": validation.float_in_range(
                "shift_factor", latent_scaling["shift_factor"], -np.inf, np.inf
            ),
        }

    @property
    def conditional(self):
        """Whether the prior takes class labels."""
        return self.num_classes is not None

    @property
    def null_class(self):
        """Label of the unconditional velocity (0 for an unconditional prior,
        whose denoiser ignores labels)."""
        return self.num_classes or 0

    # -- building --------------------------------------------------------------

    def build(self, input_shape=None):
        fresh = not self.ema_denoiser.built
        shape = (None, *self.latent_shape)
        for denoiser in (self.denoiser, self.ema_denoiser):
            if not denoiser.built:
                denoiser.build(shape)
        # After building: `trainable = False` reaches only sublayers that exist.
        self.ema_denoiser.trainable = False
        if fresh:
            # The average starts as a copy (the first update copies anyway):
            # a new buffer, since JAX's training step donates both.
            for average, weight in zip(self.ema_denoiser.weights, self.denoiser.weights):
                average.assign(ops.copy(weight))
        self.built = True

    def _build_if_needed(self):
        if not self.built:
            self.build()

    # -- the objective ---------------------------------------------------------

    @staticmethod
    def interpolate(x0, noise, t):
        """`(x_t, v)`: the point `(1 - t) x0 + t noise` of the straight path
        from latents `x0` to `noise` at times `t` `(B,)`, and its velocity
        `noise - x0`, the training target."""
        x0 = ops.convert_to_tensor(x0)
        noise = ops.convert_to_tensor(noise, x0.dtype)
        t = ops.cast(t, x0.dtype)[:, None, None, None]
        return (1.0 - t) * x0 + t * noise, noise - x0

    def draw_times(self, batch):
        """Training times `(batch,)` in [0, 1] from `time_distribution`."""
        if self.time_distribution == "logit_normal":
            return ops.sigmoid(keras.random.normal((batch,), seed=self.noise_seed))
        return keras.random.uniform((batch,), seed=self.noise_seed)

    def drop_labels(self, labels, training=False):
        """int32 labels `(B,)`, each replaced by the null class with
        probability `label_dropout` in training."""
        labels = ops.cast(labels, "int32")
        if training and self.label_dropout > 0:
            dropped = keras.random.uniform(ops.shape(labels), seed=self.label_dropout_seed)
            labels = ops.where(dropped < self.label_dropout, self.null_class, labels)
        return labels

    def _labels_or_null(self, labels, batch):
        if not self.conditional:
            return None
        if labels is None:
            return ops.full((batch,), self.null_class, dtype="int32")
        return ops.cast(labels, "int32")

    def _split_data(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise ValueError(
                    "Expected latents or a pair (latents, labels). "
                    f"Received a sequence of {len(x)} inputs."
                )
            x, y = x
        return x, (y if self.conditional else None)

    def check_latents(self, latents, name="latents"):
        """Raises a ValueError unless `latents` are `(batch, *latent_shape)`."""
        shape = tuple(latents.shape)
        if len(shape) != 4 or any(
            size is not None and size != wanted
            for size, wanted in zip(shape[1:], self.latent_shape)
        ):
            expected = ", ".join(map(str, self.latent_shape))
            raise ValueError(
                f"This prior was built for {name} of shape (batch, {expected}). "
                f"Received shape={shape}."
            )

    def compute_losses(self, data, training=False):
        latents, labels = self._split_data(data)
        self.check_latents(latents)
        validation.check_class_labels(labels, self.num_classes, tuple(latents.shape)[0])
        self._build_if_needed()
        x0 = ops.cast(latents, "float32")
        batch = ops.shape(x0)[0]
        noise = keras.random.normal(ops.shape(x0), seed=self.noise_seed)
        t = self.draw_times(batch)
        x_t, target = self.interpolate(x0, noise, t)
        if self.conditional:
            labels = self.drop_labels(labels, training)
        predicted = self.denoiser(x_t, t, labels, training=training)
        per_sample = ops.mean(ops.square(predicted - target), axis=(1, 2, 3))
        return {"mse": ops.mean(per_sample)}, {}

    def after_train_step(self):
        """The moving-average update of `ema_denoiser` (see the class docstring)."""
        count = ops.cast(self.ema_updates, "float32")
        decay = ops.minimum(self.ema_decay, count / (count + 10.0))
        # Both denoisers create their weights in the same order.
        for average, weight in zip(self.ema_denoiser.weights, self.denoiser.weights):
            value = ops.cast(weight, average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)
        self.ema_updates.assign(self.ema_updates + 1)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != (3 if self.conditional else 2):
            expected = "(x_t, t, labels)" if self.conditional else "(x_t, t)"
            raise ValueError(f"Expected inputs {expected}. Received: {type(inputs).__name__}")
        x_t, t = inputs[0], inputs[1]
        labels = inputs[2] if self.conditional else None
        return self.denoiser(x_t, t, labels, training=training)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def _check_array_inputs(self, x, y):
        # Built here, since JAX and PyTorch `fit` would otherwise build the
        # model by a symbolic call on the latents alone.
        self._build_if_needed()
        latents, labels = self._split_data((x, y))
        if isinstance(latents, np.ndarray):
            self.check_latents(latents)
            if labels is None or isinstance(labels, np.ndarray):
                validation.check_class_labels(labels, self.num_classes, len(latents))

    # -- velocities ------------------------------------------------------------

    def _velocity(self, x, t, labels, use_ema):
        denoiser = self.ema_denoiser if use_ema else self.denoiser
        return denoiser(x, t, labels)

    def velocity(self, x, t, labels=None, use_ema=True):
        """float32 velocities `(B, h, w, C)` at latents `x` and times `t`
        `(B,)` (or a float), given int labels `(B,)` in `[0, num_classes]`
        (None: the null class); by the averaged weights unless `use_ema` is
        False."""
        self.check_latents(x, "x")
        self._build_if_needed()
        x = ops.cast(x, "float32")
        batch = ops.shape(x)[0]
        t = ops.broadcast_to(ops.cast(t, "float32"), (batch,))
        if labels is not None:
            if not self.conditional:
                raise ValueError(
                    "This prior is unconditional (num_classes=None): labels are not accepted."
                )
            labels = ops.convert_to_tensor(labels, dtype="int32")
            validation.check_class_labels(labels, self.num_classes + 1, tuple(x.shape)[0])
        return self._velocity(x, t, self._labels_or_null(labels, batch), use_ema)

    def guided_velocity(self, x, t, labels, guidance_scale, use_ema=True):
        """Classifier-free guidance `v_u + s (v_c - v_u)` of the conditional
        `v_c` and unconditional `v_u` velocities, computed in one batch as
        `(1 - s) v_u + s v_c` (so that s=1 gives `v_c` and s=0 `v_u` exactly);
        `t` a float32 tensor `(B,)`, `guidance_scale` None for `v_c` alone."""
        if guidance_scale is None:
            return self._velocity(x, t, labels, use_ema)
        batch = ops.shape(x)[0]
        both = self._velocity(
            ops.concatenate([x, x], axis=0),
            ops.concatenate([t, t], axis=0),
            ops.concatenate([labels, ops.full((batch,), self.null_class, "int32")], axis=0),
            use_ema,
        )
        conditional, unconditional = both[:batch], both[batch:]
        return (1.0 - guidance_scale) * unconditional + guidance_scale * conditional

    # -- sampling --------------------------------------------------------------

    def initial_noise(self, num, seed=None):
        """The noise `(num, h, w, C)` that `sample(num, seed=seed)` starts from."""
        return keras.random.normal((num, *self.latent_shape), dtype="float32", seed=seed)

    def sample(
        self,
        num,
        labels=None,
        num_steps=25,
        guidance_scale=1.0,
        sampler="euler",
        seed=None,
        use_ema=True,
    ):
        """Draws `num` latent grids by integrating the flow ODE from noise
        (t=1) to t=0.

        Args:
            num: number of latents.
            labels: int array `(num,)` in `[0, num_classes)` for a
                class-conditional prior, or None for its unconditional
                distribution (the null class); must be None for an
                unconditional prior.
            num_steps: positive number of uniform time steps.
            guidance_scale: non-negative float s of classifier-free guidance,
                `v_u + s (v_c - v_u)`: 1 is the conditional velocity (one
                batch of `num`), 0 the unconditional one, above 1 sharper
                classes; other values than 1 need `labels`.
            sampler: `"euler"` (one denoiser evaluation per step) or `"heun"`
                (two: Euler's step, then the trapezoid of the velocities at
                both ends).
            seed: None (Keras's global seed generator) or a non-negative int:
                the same seed gives the same latents on the same backend.
            use_ema: whether the averaged weights are used (the default).

        Returns:
            float32 tensor `(num, h, w, C)`, scaled latents for the
            autoencoder's `decode_scaled`.
        """
        num = validation.positive_int("num", num)
        num_steps = validation.positive_int("num_steps", num_steps)
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}. Received: sampler={sampler!r}")
        guidance_scale = validation.float_in_range(
            "guidance_scale", guidance_scale, 0.0, np.inf, high_inclusive=False
        )
        if not self.conditional and labels is not None:
            raise ValueError(
                "This prior is unconditional (num_classes=None): `labels` are not accepted."
            )
        if guidance_scale != 1.0:
            if not self.conditional:
                raise ValueError(
                    "Classifier-free guidance needs a class-conditional prior: this one is "
                    f"unconditional (num_classes=None). Received: guidance_scale={guidance_scale!r}"
                )
            if labels is None:
                raise ValueError(
                    "Classifier-free guidance needs `labels`. "
                    f"Received: guidance_scale={guidance_scale!r}, labels=None"
                )
        labels = validation.sample_labels(labels, num, self.num_classes)
        if seed is not None:
            seed = validation.non_negative_int("seed", seed)
        self._build_if_needed()
        start = None
        if self.conditional:
            start = np.full((num,), self.null_class, dtype="int32")
            if labels is not None:
                start = labels.astype("int32")
            start = ops.convert_to_tensor(start, dtype="int32")
        noise = self.initial_noise(num, seed)
        # A tensor, so that a new scale does not recompile the loop.
        scale = ops.convert_to_tensor(guidance_scale, dtype="float32")
        static = {
            "num_steps": num_steps,
            "sampler": sampler,
            "guided": guidance_scale != 1.0,
            "use_ema": bool(use_ema),
        }
        return self._run_compiled((noise, start, scale), static)

    def _sampling_loop(self, noise, labels, guidance_scale, **static):
        num_steps, sampler = static["num_steps"], static["sampler"]
        guidance = guidance_scale if static["guided"] else None
        batch = ops.shape(noise)[0]

        def velocity(x, t):
            times = ops.full((batch,), t, dtype="float32")
            return self.guided_velocity(x, times, labels, guidance, static["use_ema"])

        def body(step, x):
            t = 1.0 - ops.cast(step, "float32") / num_steps
            t_next = 1.0 - ops.cast(step + 1, "float32") / num_steps
            dt = t_next - t
            v = velocity(x, t)
            euler = x + dt * v
            if sampler == "euler":
                return euler
            return x + 0.5 * dt * (v + velocity(euler, t_next))

        return ops.fori_loop(0, num_steps, body, noise)

    def get_config(self):
        config = super().get_config()
        denoiser = self.denoiser
        config.update(
            {
                "latent_shape": self.latent_shape,
                "num_classes": self.num_classes,
                "channels": denoiser.channels,
                "channel_multipliers": denoiser.channel_multipliers,
                "num_blocks": denoiser.num_blocks,
                "attention": denoiser.attention,
                "dropout": denoiser.dropout,
                "groups": denoiser.groups,
                "label_dropout": self.label_dropout,
                "ema_decay": self.ema_decay,
                "time_distribution": self.time_distribution,
                "latent_scaling": self.latent_scaling,
            }
        )
        return config
