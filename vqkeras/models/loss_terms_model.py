import keras
from keras import ops

from vqkeras import distribution
from vqkeras.callbacks import StopOnNaN
from vqkeras.models.optimizer_groups import (
    GroupedOptimizer,
    OptimizerGroup,
    check_groups,
    group_variables,
)
from vqkeras.models.trainers import backend_trainer_class


class LossTermsModel(backend_trainer_class(), keras.Model):
    """A Keras model trained on a sum of named loss terms, on any backend.

    Subclasses implement `compute_losses(data, training)`, returning the
    scalar loss terms (already weighted; their names given to `__init__` as
    `loss_names`) and a dict of outputs; optionally `extra_metrics` and
    `update_extra_metrics(outputs)`. They never touch backend code:
    `train_step` and `test_step` come from the backend's trainer
    (`vqkeras.models.trainers`), so `compile(optimizer=...)` then `fit(...)`
    trains them on TensorFlow, JAX or PyTorch.

    The logs show `loss` (the sum), each term by name and the extra metrics,
    all averaged over the epoch. Every `fit` stops with a `FloatingPointError`
    as soon as a logged value turns NaN or inf (`vqkeras.callbacks.StopOnNaN`).

    Optimizer groups: a family that trains parts of itself on their own loss
    terms with their own optimizers (a generator and a discriminator) lists
    them in `optimizer_groups` (see `vqkeras.models.optimizer_groups`); then
    `compile(optimizer=..., <group>_optimizer=...)` takes one optimizer per
    group, and each training step applies each optimizer to the gradient of
    its group's loss with respect to its group's variables only.

    Adaptive loss weights: in training steps, `adaptive_loss_weights(terms,
    gradient_norm)` may scale loss terms by factors computed from gradient
    norms, e.g. VQGAN's ||grad L_rec|| / ||grad L_gan|| at the decoder's last
    layer. `gradient_norm(loss_names, variable)` is the L2 norm of the
    gradient of the sum of those terms with respect to `variable` (over the
    global batch under data parallelism), computed by the backend's trainer
    from the step's own forward pass. The factors are constants for the
    gradients and are logged by the family if it wants (they are in the
    outputs given to `update_extra_metrics` as `"loss_weights"`).
    """

    def __init__(self, loss_names, **kwargs):
        super().__init__(**kwargs)
        self.loss_names = tuple(loss_names)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.loss_term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]

    def compute_losses(self, data, training=False):
        """Returns `(terms, outputs)`: a dict of scalar loss terms named as in
        `loss_names`, and a dict of outputs for `update_extra_metrics`."""
        raise NotImplementedError

    @property
    def optimizer_groups(self):
        """The `OptimizerGroup`s: by default one, of every trainable variable
        and every loss term, trained by `compile(optimizer=...)`."""
        return (OptimizerGroup("model", self.loss_names),)

    def adaptive_loss_weights(self, terms, gradient_norm):
        """Factors `{name: scalar}` for some loss terms of a training step
        (the others count once); see the class docstring. None by default."""
        return {}

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile`, with one optimizer per optimizer group:
        `optimizer` for the first group, `<name>_optimizer` for each other
        (default: a fresh copy of `optimizer`)."""
        groups = self.optimizer_groups
        check_groups(groups, self.loss_names)
        group_optimizers = {
            group.name: kwargs.pop(f"{group.name}_optimizer", None) for group in groups[1:]
        }
        unknown = sorted(key for key in kwargs if key.endswith("_optimizer"))
        if unknown:
            expected = [f"{group.name}_optimizer" for group in groups[1:]] or "none"
            raise TypeError(
                f"{type(self).__name__}.compile() got unexpected arguments {unknown}. "
                f"Its optimizer groups take: optimizer, {expected}."
            )
        if len(groups) == 1:
            return super().compile(optimizer=optimizer, **kwargs)
        grouped = GroupedOptimizer.for_groups(
            groups,
            optimizer,
            group_optimizers,
            loss_scaling=kwargs.pop("auto_scale_loss", True)
            and self.dtype_policy.name == "mixed_float16",
        )
        super().compile(optimizer=grouped, auto_scale_loss=False, **kwargs)
        # A model may be compiled before it is built: look the variables up
        # when Keras builds the optimizer.
        grouped.find_group_variables_with(lambda: group_variables(self, self.optimizer_groups))
        return None

    def after_train_step(self):
        """Called by the backend trainers after each training step's optimizer
        updates, with the updated weights in place: a family may assign
        non-trainable state here (e.g. `LatentDiffusion`'s moving average of
        the weights). Nothing by default."""

    @property
    def extra_metrics(self):
        return []

    def update_extra_metrics(self, outputs):
        pass

    @property
    def metrics(self):
        return [self.loss_tracker, *self.loss_term_trackers, *self.extra_metrics]

    def compile_from_config(self, config):
        # Keras's own skips an overridden `compile`: call this one.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- called by the backend trainers ---------------------------------------

    def _training_groups(self):
        """`(optimizer, variables, loss_names)` of each optimizer group."""
        groups = self.optimizer_groups
        if len(groups) == 1:
            return [(self.optimizer, self.trainable_variables, groups[0].loss_names)]
        optimizers = self.optimizer.optimizers
        variables = group_variables(self, groups)
        return [(o, v, g.loss_names) for o, v, g in zip(optimizers, variables, groups)]

    def _weighted_sum(self, terms, names, weights=None):
        weights = weights or {}
        return sum(
            terms[name] * weights[name] if name in weights else terms[name] for name in names
        )

    def _stopped_weights(self, terms, gradient_norm):
        weights = self.adaptive_loss_weights(terms, gradient_norm)
        return {name: ops.stop_gradient(weight) for name, weight in weights.items()}

    def _compute_losses(self, data, training):
        terms, outputs = self.compute_losses(data, training=training)
        total = self._weighted_sum(terms, self.loss_names)
        return total, terms, outputs

    def _update_metrics(self, data, total, terms, outputs):
        # Weight each batch by its size, so the epoch value is a per-sample mean.
        first = next(x for x in keras.tree.flatten(data) if x is not None)
        batch_size = ops.cast(ops.shape(first)[0], "float32")
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        for tracker in self.loss_term_trackers:
            tracker.update_state(terms[tracker.name], sample_weight=batch_size)
        self.update_extra_metrics(outputs)
        return {metric.name: metric.result() for metric in self.metrics}

    @classmethod
    def from_preset(cls, name_or_dir, cache_dir=None):
        """Loads a preset holding this class: a shipped name or a folder."""
        from vqkeras import presets

        return presets.from_preset(name_or_dir, expected_class=cls, cache_dir=cache_dir)

    def save_to_preset(self, directory, metadata=None, overwrite=False):
        """Saves config, weights and metadata as a preset folder."""
        from vqkeras import presets

        return presets.save_to_preset(self, directory, metadata=metadata, overwrite=overwrite)

    def fit(
        self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs
    ):
        callbacks = list(callbacks or [])
        if not any(isinstance(c, StopOnNaN) for c in callbacks):
            callbacks.append(StopOnNaN())
        self._check_batches_split_evenly(x, batch_size, kwargs)
        return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)

    def _check_batches_split_evenly(self, x, batch_size, fit_kwargs):
        # Data-parallel training: an uneven split fails deep inside JAX with an
        # XLA error, and would weight samples unequally on TensorFlow. Arrays
        # are checked here, where their size is known; datasets batch themselves.
        replicas = distribution.replica_count(self)
        if replicas == 1:
            return
        batch_size = batch_size or 32  # Keras's default
        arrays = [("x", x, batch_size)]
        validation = fit_kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and validation:
            validation_batch_size = fit_kwargs.get("validation_batch_size") or batch_size
            arrays.append(("validation_data", validation[0], validation_batch_size))
        for name, array, size in arrays:
            if hasattr(array, "shape") and len(array.shape):
                try:
                    distribution.check_batch_size(size, replicas, num_samples=len(array))
                except ValueError as error:
                    raise ValueError(f"fit({name}=...): {error}") from None
