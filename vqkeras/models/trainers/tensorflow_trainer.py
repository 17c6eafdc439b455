import tensorflow as tf


class TensorFlowTrainer:
    """`train_step` / `test_step` with `tf.GradientTape` (run inside tf.function)."""

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, terms, outputs = self._compute_losses(data, training=True)
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(data, total, terms, outputs)

    def test_step(self, data):
        total, terms, outputs = self._compute_losses(data, training=False)
        return self._update_metrics(data, total, terms, outputs)
