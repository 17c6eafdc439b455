import math

import keras
import numpy as np
from keras import ops

from vqkeras import validation
from vqkeras.models.compiled_loops import CompiledSampling
from vqkeras.models.loss_terms_model import LossTermsModel


class CodePrior(CompiledSampling, LossTermsModel):
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

    The codes a prior models, set by `__init__`: `num_embeddings` codes per
    position of `grid_shape` grids; with `depth`, `depth` stacked codes per
    position, coarse to fine (an RQ-VAE's levels); with
    `condition_num_embeddings` and `condition_grid_shape`, given the codes
    of a coarser grid (a VQ-VAE-2's bottom codes given its top codes); with
    `num_classes`, given a class label. `image_size` `(H, W, C)`, where
    known, gives `bits_per_dim`.

    Subclasses implement `_build_if_needed`, `compute_losses` (returning the
    outputs `nll_per_grid`), `sample` and `_sampling_loop`.
    """

    nll_is_likelihood = True
    # Keyword options of `sample` besides `num`, `labels`, `condition`, `seed`.
    sampling_options = ("temperature", "top_k", "top_p")

    def __init__(
        self,
        num_embeddings,
        grid_shape,
        num_classes=None,
        image_size=None,
        depth=None,
        condition_num_embeddings=None,
        condition_grid_shape=None,
        **kwargs,
    ):
        super().__init__(loss_names=("nll",), **kwargs)
        self.num_embeddings = validation.positive_int("num_embeddings", num_embeddings)
        self.grid_shape = validation.positive_int_tuple("grid_shape", grid_shape)
        if len(self.grid_shape) != 2:
            raise ValueError(f"`grid_shape` must be (height, width). Received: {grid_shape!r}")
        self.num_classes = (
            None if num_classes is None else validation.positive_int("num_classes", num_classes)
        )
        self.image_size = None
        if image_size is not None:
            self.image_size = validation.positive_int_tuple("image_size", image_size)
            if len(self.image_size) != 3:
                raise ValueError(
                    f"`image_size` must be (height, width, channels). Received: {image_size!r}"
                )
        self.depth = None if depth is None else validation.positive_int("depth", depth)
        self._set_condition_grid(condition_num_embeddings, condition_grid_shape)
        self.bits_per_dim = keras.metrics.Mean(name="bits_per_dim")

    def _set_condition_grid(self, condition_num_embeddings, condition_grid_shape):
        if (condition_num_embeddings is None) != (condition_grid_shape is None):
            raise ValueError(
                "`condition_num_embeddings` and `condition_grid_shape` are set together. "
                f"Received: condition_num_embeddings={condition_num_embeddings!r}, "
                f"condition_grid_shape={condition_grid_shape!r}"
            )
        self.condition_num_embeddings = self.condition_grid_shape = None
        if condition_num_embeddings is None:
            return
        self.condition_num_embeddings = validation.positive_int(
            "condition_num_embeddings", condition_num_embeddings
        )
        self.condition_grid_shape = validation.positive_int_tuple(
            "condition_grid_shape", condition_grid_shape
        )
        if len(self.condition_grid_shape) != 2 or any(
            size % condition_size
            for size, condition_size in zip(self.grid_shape, self.condition_grid_shape)
        ):
            raise ValueError(
                "`condition_grid_shape` must be (height, width), dividing "
                f"grid_shape={self.grid_shape}. Received: {condition_grid_shape!r}"
            )

    @classmethod
    def for_grid(cls, grid, condition=None, **kwargs):
        """A prior over the codes of `grid` (a `vqkeras.codes.CodeGrid` of
        `model.code_grids()`), given the codes of the `condition` grid if one
        is named; `kwargs` are the other constructor arguments."""
        if condition is not None:
            kwargs.update(
                condition_num_embeddings=condition.num_embeddings,
                condition_grid_shape=condition.spatial_shape,
            )
        return cls(grid.num_embeddings, grid.spatial_shape, depth=grid.depth, **kwargs)

    def fits(self, grid, condition=None):
        """Whether this prior models the codes of `grid` given the codes of
        the `condition` grid (or given none): the description of its codes,
        as `for_grid` would build it."""
        given = None
        if self.conditioned_on_grid:
            given = (self.condition_num_embeddings, tuple(self.condition_grid_shape))
        wanted = None if condition is None else (condition.num_embeddings, condition.spatial_shape)
        return (self.num_embeddings, self.code_shape, given) == (
            grid.num_embeddings,
            tuple(grid.shape),
            wanted,
        )

    @property
    def conditional(self):
        """Whether the prior takes class labels."""
        return self.num_classes is not None

    @property
    def conditioned_on_grid(self):
        """Whether the prior takes a condition code grid."""
        return self.condition_num_embeddings is not None

    @property
    def levels(self):
        """Codes per position: `depth`, or 1."""
        return self.depth or 1

    @property
    def code_shape(self):
        """Shape of one sample: `grid_shape`, plus `(depth,)` with `depth`."""
        return self.grid_shape + ((self.depth,) if self.depth else ())

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
        if not self.conditioned_on_grid:
            if condition is not None:
                raise ValueError(
                    "This prior has no condition grid (condition_num_embeddings=None): "
                    "a condition is not accepted."
                )
            return
        height, width = self.condition_grid_shape
        if condition is None:
            raise ValueError(
                f"This prior is conditioned on a code grid: condition codes of shape "
                f"(batch, {height}, {width}) are required."
            )
        shape = tuple(condition.shape)
        if (
            len(shape) != 3
            or shape[1:] != self.condition_grid_shape
            or (None not in (shape[0], batch) and shape[0] != batch)
        ):
            raise ValueError(
                f"Expected condition codes of shape ({batch}, {height}, {width}), one grid per "
                f"code grid. Received shape={shape}."
            )
        validation.check_indices(condition, self.condition_num_embeddings, name="condition codes")

    def _split_inputs(self, x, y=None):
        """`(indices, labels, condition)` from `x` (see the call arguments) and `y`."""
        labels = y if self.conditional else None
        if not isinstance(x, (tuple, list)):
            if self.conditioned_on_grid:
                raise ValueError(
                    "This prior is conditioned on a code grid: expected inputs "
                    "(grids, condition_grids) or (grids, condition_grids, labels). "
                    "Received a single tensor."
                )
            return x, labels, None
        if self.conditioned_on_grid:
            if len(x) == 3:
                return x[0], x[2], x[1]
            if len(x) == 2:
                return x[0], labels, x[1]
            raise ValueError(
                "Expected (grids, condition_grids) or (grids, condition_grids, labels). "
                f"Received a sequence of {len(x)} inputs."
            )
        if len(x) != 2:
            raise ValueError(
                "Expected code grids or a pair (grids, labels). "
                f"Received a sequence of {len(x)} inputs."
            )
        return x[0], x[1], None

    def _sampling_condition(self, condition, num):
        """The condition grids of `sample`, checked, as an int32 tensor
        `(num, hc, wc)` (None without a condition grid)."""
        if condition is not None:
            condition = np.asarray(ops.convert_to_numpy(condition))
        self._check_condition(condition, num)
        if condition is None:
            return None
        return ops.convert_to_tensor(condition, dtype="int32")

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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "grid_shape": self.grid_shape,
                "num_classes": self.num_classes,
                "image_size": self.image_size,
                "depth": self.depth,
                "condition_num_embeddings": self.condition_num_embeddings,
                "condition_grid_shape": self.condition_grid_shape,
            }
        )
        return config

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
