import tensorflow as tf


class TensorFlowTrainer:
    """`train_step` / `test_step` with `tf.GradientTape` (run inside tf.function)."""

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, terms, outputs = self._compute_losses(data, training=True)
            # Under a tf.distribute strategy each replica's terms are means
            # over its share of the batch and the optimizer sums the replicas'
            # gradients: dividing by the replica count makes that sum the
            # gradient of the mean over the global batch, as Keras's own
            # train_step does (keras.src.losses.loss.scale_loss_for_distribution).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(data, total, terms, outputs)

    def test_step(self, data):
        total, terms, outputs = self._compute_losses(data, training=False)
        return self._update_metrics(data, total, terms, outputs)
