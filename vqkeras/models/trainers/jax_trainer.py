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
    (EMA codebooks, seeds), optimizer and metric variables. One forward pass
    (`jax.vjp`) serves every gradient of the step: each optimizer group's,
    and those that adaptive loss weights need.
    """

    def _stateless_terms(self, trainable, non_trainable, data, training):
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            terms, outputs = self.compute_losses(data, training=training)
        non_trainable = _updated_values(scope, self.non_trainable_variables, non_trainable)
        return terms, (outputs, non_trainable)

    def _stateless_after_train_step(self, trainable, non_trainable):
        """Non-trainable values after `after_train_step` on the new weights."""
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.after_train_step()
        return _updated_values(scope, self.non_trainable_variables, non_trainable)

    def _stateless_update_metrics(self, metrics_variables, data, total, terms, outputs):
        mapping = list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_metrics(data, total, terms, outputs)
        return logs, _updated_values(scope, self.metrics_variables, metrics_variables)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        terms, pullback, (outputs, non_trainable) = jax.vjp(
            lambda values: self._stateless_terms(values, non_trainable, data, True),
            trainable,
            has_aux=True,
        )
        position = {id(variable): i for i, variable in enumerate(self.trainable_variables)}

        def gradients(factors):
            """Gradients of the sum of `factors[name] * terms[name]`."""
            cotangent = {
                name: jax.numpy.asarray(factors.get(name, 0.0), term.dtype)
                for name, term in terms.items()
            }
            return pullback(cotangent)[0]

        def gradient_norm(names, variable):
            gradient = gradients(dict.fromkeys(names, 1.0))[position[id(variable)]]
            return jax.numpy.linalg.norm(gradient)

        weights = self._stopped_weights(terms, gradient_norm)
        total = self._weighted_sum(terms, self.loss_names, weights)
        trainable = list(trainable)
        new_optimizer_variables, start = [], 0
        for optimizer, variables, names in self._training_groups():
            own = optimizer_variables[start : start + len(optimizer.variables)]
            start += len(own)
            # A LossScaleOptimizer reads its scale from the optimizer state.
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, own))):
                scale = optimizer.scale_loss(1.0)
            group_gradients = gradients({name: weights.get(name, 1.0) * scale for name in names})
            indices = [position[id(variable)] for variable in variables]
            values, own = optimizer.stateless_apply(
                own, [group_gradients[i] for i in indices], [trainable[i] for i in indices]
            )
            for i, value in zip(indices, values):
                trainable[i] = value
            new_optimizer_variables += own
        non_trainable = self._stateless_after_train_step(trainable, non_trainable)
        if weights:
            outputs = {**outputs, "loss_weights": weights}
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, total, terms, outputs
        )
        return logs, (trainable, non_trainable, new_optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        terms, (outputs, non_trainable) = self._stateless_terms(
            trainable, non_trainable, data, False
        )
        total = self._weighted_sum(terms, self.loss_names)
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, total, terms, outputs
        )
        return logs, (trainable, non_trainable, metrics_variables)
