"""The two operations of a codebook's step: the nearest-code search and the
per-code sums (of the EMA update, k-means and the usage histograms).

Both are `keras.ops` code, with PyTorch's native operations on that backend,
where Keras's generic versions cost several times the work (eager, on a
2-core CPU; `benchmarks/README.md`): its `segment_sum` repeats the indices
over every channel and scatters through a (K + 1)-row buffer, 18-26x the time
of `index_add`; its search (a matmul, then a separate add and `argmin`) takes
1.7x an `addmm` followed by `min(...).indices`. The results are the same
function: the nearest code, ties to the lowest index as with `argmin`; sums
added in another order (float rounding).
"""

import keras
from keras import ops


def nearest_code_indices(flat, codebook):
    """int32 index `(N,)` of the row of `codebook` `(K, C)` nearest (squared
    L2) to each row of `flat` `(N, C)`; no gradient flows through it."""
    flat = ops.stop_gradient(ops.convert_to_tensor(flat))
    codebook = ops.stop_gradient(ops.convert_to_tensor(codebook))
    # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2, one matmul for all pairs.
    # ||x||^2 is the same for every code of a row, so the search leaves it
    # out, and the -2 scales the (K, C) codebook (or the product, inside
    # PyTorch's addmm), not the (N, K) products in a pass of its own.
    squared_norms = ops.sum(ops.square(codebook), axis=1)
    if keras.config.backend() == "torch":
        import torch

        distances = torch.addmm(squared_norms, flat, codebook.T, alpha=-2.0)
        return torch.min(distances, dim=1).indices.to(torch.int32)
    distances = ops.matmul(flat, ops.transpose(-2.0 * codebook)) + squared_norms
    return ops.cast(ops.argmin(distances, axis=1), "int32")


def sums_per_code(values, indices, num_codes):
    """`(num_codes, ...)`: for each code, the sum of the rows of `values`
    `(N, ...)` whose int `indices` `(N,)` (each in `[0, num_codes)`) name it."""
    if keras.config.backend() == "torch":
        import torch

        values = ops.convert_to_tensor(values)
        indices = ops.convert_to_tensor(indices)
        zeros = torch.zeros(
            (num_codes, *values.shape[1:]), dtype=values.dtype, device=values.device
        )
        return zeros.index_add(0, indices, values)
    return ops.segment_sum(values, indices, num_codes)
