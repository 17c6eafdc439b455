import jax
import keras


def _updated_values(scope, variables, values):
    """Values of `variables` after a StatelessScope: new where assigned."""
    new_values = []
    for variable, value in zip(variables, values):
        current = scope.get_current_value(variable)
        new_values.append(value if current is None else current)
    return new_values


class JAXTrainer:
    """Stateless `train_step` / `test_step` for JAX (jitted by Keras).

    State flows in and out explicitly: trainable and non-trainable values
    (EMA codebooks, seeds), optimizer and metric variables.
    """

    def _stateless_losses(self, trainable, non_trainable, optimizer_variables, data, training):
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            total, terms, outputs = self._compute_losses(data, training=training)
        non_trainable = _updated_values(scope, self.non_trainable_variables, non_trainable)
        scaled = total
        if training:
            # A LossScaleOptimizer reads its scale from the optimizer state.
            mapping = list(zip(self.optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                scaled = self.optimizer.scale_loss(total)
        return scaled, (total, terms, outputs, non_trainable)

    def _stateless_update_metrics(self, metrics_variables, data, total, terms, outputs):
        mapping = list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_metrics(data, total, terms, outputs)
        return logs, _updated_values(scope, self.metrics_variables, metrics_variables)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        grad_fn = jax.value_and_grad(self._stateless_losses, has_aux=True)
        (_, (total, terms, outputs, non_trainable)), grads = grad_fn(
            trainable, non_trainable, optimizer_variables, data, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, total, terms, outputs
        )
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        _, (total, terms, outputs, non_trainable) = self._stateless_losses(
            trainable, non_trainable, None, data, False
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, total, terms, outputs
        )
        return logs, (trainable, non_trainable, metrics_variables)
