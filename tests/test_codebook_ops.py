import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers.codebook_ops import nearest_code_indices, sums_per_code


@pytest.mark.parametrize("num_vectors, num_codes, dim", [(1, 1, 1), (37, 5, 3), (300, 64, 16)])
def test_nearest_code_indices_match_numpy(num_vectors, num_codes, dim):
    rng = np.random.default_rng(num_vectors)
    flat = rng.normal(size=(num_vectors, dim)).astype("float32")
    codebook = rng.normal(size=(num_codes, dim)).astype("float32")

    indices = nearest_code_indices(flat, codebook)

    distances = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(to_numpy(indices), distances.argmin(1))
    assert keras.backend.standardize_dtype(indices.dtype) == "int32"
    assert tuple(indices.shape) == (num_vectors,)


def test_nearest_code_ties_go_to_the_lowest_index():
    # Codes 1 and 3 are the same vector, as are 0 and 2: every input is
    # exactly as near to both codes of a pair (small integers: exact floats).
    codebook = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]], "float32")
    flat = np.array([[0.0, 3.0], [3.0, 0.0], [1.0, 1.0]], "float32")

    np.testing.assert_array_equal(to_numpy(nearest_code_indices(flat, codebook)), [1, 0, 0])


@pytest.mark.parametrize("row_shape", [(), (3,), (2, 4)])
def test_sums_per_code_match_numpy(row_shape):
    rng = np.random.default_rng(len(row_shape))
    values = rng.normal(size=(50, *row_shape)).astype("float32")
    indices = rng.integers(0, 7, size=50).astype("int32")
    indices[indices == 4] = 5  # a code no row names sums to zero

    sums = to_numpy(sums_per_code(values, indices, 7))

    expected = np.zeros((7, *row_shape), "float32")
    np.add.at(expected, indices, values)
    assert sums.shape == (7, *row_shape)
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-5)
    assert not sums[4].any()
