"""The training step of vqkeras models, once per backend.

Keras has no backend-independent way to write a custom `train_step`: gradients
come from `tf.GradientTape`, `jax.value_and_grad` over a stateless function, or
`torch.autograd`. Each module here implements `train_step` and `test_step` for
one backend, around two backend-agnostic methods of `LossTermsModel`:
`_compute_losses(data, training)` and `_update_metrics(data, ...)`. Model
families define only their loss terms; they never touch this code.
"""

import keras


def backend_trainer_class():
    """The trainer mixin of the active Keras backend."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        from vqkeras.models.trainers.tensorflow_trainer import TensorFlowTrainer

        return TensorFlowTrainer
    if backend == "jax":
        from vqkeras.models.trainers.jax_trainer import JAXTrainer

        return JAXTrainer
    if backend == "torch":
        from vqkeras.models.trainers.torch_trainer import TorchTrainer

        return TorchTrainer

    class UnsupportedBackendTrainer:
        def train_step(self, *args, **kwargs):
            raise NotImplementedError(
                "vqkeras models train on the 'tensorflow', 'jax' and 'torch' backends. "
                f"Received: KERAS_BACKEND={backend!r}."
            )

    return UnsupportedBackendTrainer
