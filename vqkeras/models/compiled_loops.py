"""A model's sampling loop compiled once per backend.

The priors over codes and `LatentDiffusion` sample step by step in a loop
(`model._sampling_loop`): compiled whole, its steps run without Python
between them.
"""

import keras


class CompiledSampling:
    """Mixin of the models with a `_sampling_loop(*arguments, **static)`:
    `_run_compiled(arguments, static)` runs it compiled where the backend
    allows it, one compilation per `static` setting (keyword arguments that
    change the loop's structure: steps, sampler, top-k):

    - JAX: a `jax.jit` of the loop, stateless over the model's variables;
    - TensorFlow: a `tf.function`;
    - PyTorch: the eager loop without gradient tracking.
    """

    _compiled_sampler = None

    def _run_compiled(self, arguments, static):
        backend = keras.config.backend()
        if backend == "jax":
            import jax

            if self._compiled_sampler is None:

                def stateless_loop(values, *arguments, **static):
                    mapping = list(zip(self.variables, values))
                    with keras.StatelessScope(state_mapping=mapping):
                        return self._sampling_loop(*arguments, **static)

                self._compiled_sampler = jax.jit(stateless_loop, static_argnames=tuple(static))
            values = [variable.value for variable in self.variables]
            return self._compiled_sampler(values, *arguments, **static)
        if backend == "tensorflow":
            import tensorflow as tf

            if self._compiled_sampler is None:
                self._compiled_sampler = tf.function(self._sampling_loop)
            return self._compiled_sampler(*arguments, **static)
        if backend == "torch":
            import torch

            with torch.no_grad():
                return self._sampling_loop(*arguments, **static)
        return self._sampling_loop(*arguments, **static)
