import math

import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.models.loss_terms_model import LossTermsModel


class CodePrior(LossTermsModel):
    """Base of the priors over the integer code grids of a VQ model.

    `PixelCNNPrior`, `TransformerPrior` and `MaskGITPrior` share what the
    apps, `vqkeras.evaluation` and `vqkeras.compression` rely on:

    - `num_embeddings`, `code_shape`, `num_classes`, `conditional`,
      `conditioned_on_grid` and `fits(grid, condition)`: which codes the
      prior models (a `vqkeras.codes.CodeGrid`, given another grid or not);
    - the loss term `nll` (nats per code) and, with `image_size`, the metric
      `bits_per_dim`; `nll_is_likelihood` says whether `nll` is the codes'
      negative log-likelihood (autoregressive priors) or only a training
      cross-entropy (MaskGIT's, on randomly masked codes);
    - `sample(num, labels=None, seed=None, **options)`, with `options` named
      in `sampling_options` (plus `condition` for a prior with a condition
      grid);
    - input checks before Keras converts NumPy inputs in `fit`, `evaluate`
      and `predict`, so bad codes or labels fail with a clear message.

    Subclasses set `num_embeddings`, `num_classes`, `image_size` and
    `code_shape`, and implement `_split_inputs(x, y)` (returning `(indices,
    labels, condition)`), `_build_if_needed`, `fits`, `compute_losses`
    (returning the outputs `nll_per_grid`), `sample` and `_sampling_loop`.
    """

    nll_is_likelihood = True
    # Keyword options of `sample` besides `num`, `labels`, `condition`, `seed`.
    sampling_options = ("temperature", "top_k", "top_p")

    def __init__(self, **kwargs):
        super().__init__(loss_names=("nll",), **kwargs)
        self.bits_per_dim = keras.metrics.Mean(name="bits_per_dim")
        self._compiled_sampler = None

    @property
    def conditional(self):
        """Whether the prior takes class labels."""
        return self.num_classes is not None

    @property
    def conditioned_on_grid(self):
        """Whether the prior models its codes given the codes of another grid."""
        return False

    @property
    def input_values(self):
        """Number of values a code of the call's inputs may take."""
        return self.num_embeddings

    # -- input checks -----------------------------------------------------------

    def check_inputs(self, indices, labels=None, condition=None, num_values=None):
        """Raises a clear error unless `indices`, `labels` and `condition` suit
        this prior (codes in `[0, num_values)`, by default `[0, num_embeddings)`)."""
        batch = tuple(indices.shape)[0]
        validation.check_code_grids(indices, self.code_shape, num_values or self.num_embeddings)
        self._check_condition(condition, batch)
        validation.check_class_labels(labels, self.num_classes, batch)

    def _check_condition(self, condition, batch):
        if condition is not None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} has no condition grid: a condition is not "
                "accepted."
            )

    def _check_array_inputs(self, x, y, num_values=None):
        # Built here, since otherwise JAX and PyTorch `fit` build the model by
        # a symbolic call on the grids alone, without the labels.
        self._build_if_needed()
        # Arrays are checked before Keras converts them, so that out-of-range
        # codes or labels fail here with a clear message.
        if isinstance(x, (tuple, list, np.ndarray)):
            inputs = self._split_inputs(x, y)
            if all(value is None or isinstance(value, np.ndarray) for value in inputs):
                self.check_inputs(*inputs, num_values=num_values)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_array_inputs(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_array_inputs(x, None, num_values=self.input_values)
        return super().predict(x, *args, **kwargs)

    # -- metrics ---------------------------------------------------------------

    @property
    def extra_metrics(self):
        return [self.bits_per_dim] if self.image_size is not None else []

    def update_extra_metrics(self, outputs):
        if self.image_size is not None:
            pixel_values = math.prod(self.image_size)
            self.bits_per_dim.update_state(outputs["nll_per_grid"] / (math.log(2) * pixel_values))

    # -- sampling --------------------------------------------------------------

    def _check_sampling_options(self, num, temperature, top_k, top_p, seed):
        """`(num, temperature, top_k, top_p, seed)` checked, `temperature` a float32 tensor."""
        num = validation.positive_int("num", num)
        temperature = validation.float_in_range(
            "temperature", temperature, 0.0, np.inf, low_inclusive=False, high_inclusive=False
        )
        top_k = validation.top_k(top_k, self.num_embeddings)
        if top_p is not None:
            top_p = validation.float_in_range("top_p", top_p, 0.0, 1.0, low_inclusive=False)
        if seed is not None:
            seed = validation.non_negative_int("seed", seed)
        temperature = ops.convert_to_tensor(temperature, dtype="float32")
        return num, temperature, top_k, top_p, seed

    def _draw(self, logits, uniforms, temperature, top_k=None, top_p=None):
        """Codes `(num,)` drawn from `logits` `(num, K)` by inverting the CDF at
        `uniforms` `(num,)`, after tempering and the `top_k` / `top_p` cuts."""
        logits = logits / temperature
        if top_k is not None and top_k < self.num_embeddings:
            kth_largest = ops.top_k(logits, top_k)[0][:, -1:]
            logits = ops.where(logits < kth_largest, -np.inf, logits)
        if top_p is not None and top_p < 1.0:
            ordered = ops.top_k(logits, self.num_embeddings)[0]
            probabilities = ops.softmax(ordered, axis=-1)
            # Keep the most likely codes while the probability before them is
            # below top_p: the smallest set reaching it (the first code always).
            before = ops.cumsum(probabilities, axis=-1) - probabilities
            kept = ops.sum(ops.cast(before < top_p, "int32"), axis=-1, keepdims=True)
            threshold = ops.take_along_axis(ordered, ops.maximum(kept, 1) - 1, axis=-1)
            logits = ops.where(logits < threshold, -np.inf, logits)
        cdf = ops.cumsum(ops.softmax(logits, axis=-1), axis=-1)
        # The first code whose cumulative probability reaches u (scaled by the
        # total, which float rounding keeps only close to 1).
        codes = ops.sum(ops.cast(cdf < uniforms[:, None] * cdf[:, -1:], "int32"), axis=-1)
        return ops.minimum(codes, self.num_embeddings - 1)

    def _run_compiled(self, arguments, static):
        """`_sampling_loop(*arguments, **static)`, compiled where the backend
        allows it: a `jax.jit` of the stateless loop on JAX, a `tf.function`
        on TensorFlow (one compilation per static setting), an eager no-grad
        loop on PyTorch."""
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
