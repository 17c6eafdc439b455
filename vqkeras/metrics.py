"""Codebook utilisation metrics, accumulated over an epoch.

Both keep a histogram of the codes seen since the last reset (Keras resets
metrics at the start of each epoch and of each `evaluate`), so the logged value
describes the whole epoch, not the last batch.
"""

import keras
from keras import ops

from vqkeras import validation
from vqkeras.layers.codebook_ops import sums_per_code

# Floor of the values whose log is taken (probabilities, the MSE of PSNR): a
# zero gives a finite log, and p log p of a zero probability is 0, not NaN.
LOG_FLOOR = 1e-12


class _CodeHistogram(keras.metrics.Metric):
    def __init__(self, num_embeddings, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_embeddings = validation.positive_int("num_embeddings", num_embeddings)
        self.counts = self.add_variable(
            shape=(self.num_embeddings,), initializer="zeros", name="counts", dtype="float32"
        )

    def update_state(self, indices):
        flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
        ones = ops.ones_like(flat, dtype="float32")
        self.counts.assign_add(sums_per_code(ones, flat, self.num_embeddings))

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_embeddings,)))

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "name": self.name}


@keras.saving.register_keras_serializable(package="vqkeras")
class CodebookUsage(_CodeHistogram):
    """Fraction of the K codes used at least once since the last reset."""

    def __init__(self, num_embeddings, name="codebook_usage", **kwargs):
        super().__init__(num_embeddings, name=name, **kwargs)

    def result(self):
        return ops.mean(ops.cast(self.counts > 0, "float32"))


@keras.saving.register_keras_serializable(package="vqkeras")
class CodebookPerplexity(_CodeHistogram):
    """exp(entropy) of the code distribution since the last reset.

    Equals K when all codes are used equally often, 1 when a single code is.
    """

    def __init__(self, num_embeddings, name="perplexity", **kwargs):
        super().__init__(num_embeddings, name=name, **kwargs)

    def result(self):
        probs = self.counts / ops.maximum(ops.sum(self.counts), 1.0)
        entropy = -ops.sum(probs * ops.log(ops.maximum(probs, LOG_FLOOR)))
        return ops.exp(entropy)


class CodeUsageMetrics:
    """The perplexity and usage metrics of one quantizer's indices.

    For indices with a trailing axis of `levels` (a residual stack), one pair
    per level, named `perplexity_0`, ..., `codebook_usage_0`, ...; otherwise
    `perplexity` and `codebook_usage`. Names start with `prefix`.

    Args:
        num_embeddings: K, the number of distinct codes an index takes.
        levels: the size of the indices' trailing level axis, or None.
        prefix: what the names start with, e.g. "top_".
    """

    def __init__(self, num_embeddings, levels=None, prefix=""):
        self.levels = levels
        suffixes = [""] if levels is None else [f"_{level}" for level in range(levels)]
        self.perplexities = [
            CodebookPerplexity(num_embeddings, name=f"{prefix}perplexity{s}") for s in suffixes
        ]
        self.usages = [
            CodebookUsage(num_embeddings, name=f"{prefix}codebook_usage{s}") for s in suffixes
        ]

    @property
    def metrics(self):
        return [*self.perplexities, *self.usages]

    def update_state(self, indices):
        for level, (perplexity, usage) in enumerate(zip(self.perplexities, self.usages)):
            level_indices = indices if self.levels is None else indices[..., level]
            perplexity.update_state(level_indices)
            usage.update_state(level_indices)
