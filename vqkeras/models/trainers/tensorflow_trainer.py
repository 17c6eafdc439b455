import tensorflow as tf


class TensorFlowTrainer:
    """`train_step` / `test_step` with `tf.GradientTape` (run inside tf.function)."""

    def train_step(self, data):
        images = self._images_from_data(data)
        with tf.GradientTape() as tape:
            total, terms, outputs = self._compute_losses(images, training=True)
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(total, terms, outputs)

    def test_step(self, data):
        images = self._images_from_data(data)
        total, terms, outputs = self._compute_losses(images, training=False)
        return self._update_metrics(total, terms, outputs)
