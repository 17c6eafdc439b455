import torch


class TorchTrainer:
    """`train_step` / `test_step` with torch autograd."""

    def train_step(self, data):
        images = self._images_from_data(data)
        self.zero_grad()
        total, terms, outputs = self._compute_losses(images, training=True)
        self.optimizer.scale_loss(total).backward()
        variables = self.trainable_variables[:]
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in variables], variables)
            return self._update_metrics(total, terms, outputs)

    def test_step(self, data):
        images = self._images_from_data(data)
        total, terms, outputs = self._compute_losses(images, training=False)
        return self._update_metrics(total, terms, outputs)
