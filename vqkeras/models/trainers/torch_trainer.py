import torch


class TorchTrainer:
    """`train_step` / `test_step` with torch autograd."""

    def train_step(self, data):
        self.zero_grad()
        total, terms, outputs = self._compute_losses(data, training=True)
        self.optimizer.scale_loss(total).backward()
        variables = self.trainable_variables[:]
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in variables], variables)
            return self._update_metrics(data, total, terms, outputs)

    def test_step(self, data):
        total, terms, outputs = self._compute_losses(data, training=False)
        return self._update_metrics(data, total, terms, outputs)
