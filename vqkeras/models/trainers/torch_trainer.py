import torch


class TorchTrainer:
    """`train_step` / `test_step` with torch autograd."""

    def train_step(self, data):
        terms, outputs = self.compute_losses(data, training=True)
        groups = self._training_groups()  # after compute_losses, which builds the model

        def gradient_norm(names, variable):
            loss = self._weighted_sum(terms, names)
            (gradient,) = torch.autograd.grad(
                loss, variable.value, retain_graph=True, allow_unused=True
            )
            if gradient is None:  # the terms do not depend on the variable
                return torch.zeros((), device=variable.value.device)
            return torch.linalg.vector_norm(gradient)

        weights = self._stopped_weights(terms, gradient_norm)
        total = self._weighted_sum(terms, self.loss_names, weights)
        # Every gradient first: applying one group's update in place must not
        # change what another group's gradient sees.
        gradients = []
        for number, (optimizer, variables, names) in enumerate(groups):
            loss = optimizer.scale_loss(self._weighted_sum(terms, names, weights))
            gradients.append(
                torch.autograd.grad(
                    loss,
                    [v.value for v in variables],
                    retain_graph=number < len(groups) - 1,
                    allow_unused=True,
                )
            )
        with torch.no_grad():
            for (optimizer, variables, _), grads in zip(groups, gradients):
                optimizer.apply(list(grads), variables)
            self.after_train_step()
            if weights:
                outputs = {**outputs, "loss_weights": weights}
            return self._update_metrics(data, total, terms, outputs)

    def test_step(self, data):
        total, terms, outputs = self._compute_losses(data, training=False)
        return self._update_metrics(data, total, terms, outputs)
