import tensorflow as tf


class TensorFlowTrainer:
    """`train_step` / `test_step` with `tf.GradientTape` (run inside tf.function)."""

    def train_step(self, data):
        # Under a tf.distribute strategy each replica's terms are means over
        # its share of the batch and the optimizer sums the replicas'
        # gradients: dividing by the replica count makes that sum the gradient
        # of the mean over the global batch, as Keras's own train_step does
        # (keras.src.losses.loss.scale_loss_for_distribution).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Persistent: one gradient per optimizer group (and per adaptive weight).
        with tf.GradientTape(persistent=True) as tape:
            terms, outputs = self.compute_losses(data, training=True)
            groups = self._training_groups()  # after compute_losses, which builds the model

            def gradient_norm(names, variable):
                loss = self._weighted_sum(terms, names)  # recorded: the gradient starts here
                with tape.stop_recording():
                    gradient = tape.gradient(loss, variable)
                    if gradient is None:  # the terms do not depend on the variable
                        return tf.zeros(())
                    # The global batch's gradient, as on one device.
                    context = tf.distribute.get_replica_context()
                    gradient = context.all_reduce("MEAN", gradient)
                    return tf.norm(gradient)

            weights = self._stopped_weights(terms, gradient_norm)
            total = self._weighted_sum(terms, self.loss_names, weights)
            scaled = [
                optimizer.scale_loss(self._weighted_sum(terms, names, weights) / replicas)
                for optimizer, _, names in groups
            ]
        # Every gradient first: applying one group's update must not change
        # what another group's gradient sees.
        gradients = [
            tape.gradient(loss, variables) for loss, (_, variables, _) in zip(scaled, groups)
        ]
        for (optimizer, variables, _), grads in zip(groups, gradients):
            optimizer.apply(grads, variables)
        self.after_train_step()
        if weights:
            outputs = {**outputs, "loss_weights": weights}
        return self._update_metrics(data, total, terms, outputs)

    def test_step(self, data):
        total, terms, outputs = self._compute_losses(data, training=False)
        return self._update_metrics(data, total, terms, outputs)
