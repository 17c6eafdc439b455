"""What every quantizer promises the families (`vqkeras.layers.Quantizer`),
checked quantizer by quantizer; each keeps its own math in its own test file."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers import (
    EMAVectorQuantizer,
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    Quantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
)

QUANTIZERS = {
    "vector": lambda: VectorQuantizer(16, 4),
    "ema": lambda: EMAVectorQuantizer(16, 4, init_from_first_batch=True, seed=1),
    # Factorized, l2-normalised codes and the rotation trick; k-means init.
    "vector_options": lambda: VectorQuantizer(
        16, 4, code_dim=3, normalize_codes=True, gradient_estimator="rotation"
    ),
    "ema_kmeans": lambda: EMAVectorQuantizer(
        16, 4, code_dim=2, kmeans_init=True, kmeans_iterations=2, seed=1
    ),
    "residual": lambda: ResidualVectorQuantizer(VectorQuantizer(16, 4), depth=3),
    "residual_ema": lambda: ResidualVectorQuantizer(
        EMAVectorQuantizer(16, 4, init_from_first_batch=True, seed=1), depth=2
    ),
    "fsq": lambda: FiniteScalarQuantizer((8, 5, 5, 5)),
    "fsq_projected": lambda: FiniteScalarQuantizer((4, 4), embedding_dim=4),
    "lfq": lambda: LookupFreeQuantizer(4),
    "lfq_projected": lambda: LookupFreeQuantizer(3, embedding_dim=4),
    "gumbel": lambda: GumbelQuantizer(16, 4, seed=1),
    "gumbel_straight_through": lambda: GumbelQuantizer(16, 4, straight_through=True, seed=1),
    "residual_fsq": lambda: ResidualVectorQuantizer(FiniteScalarQuantizer((8, 8, 8, 8)), depth=2),
}


@pytest.fixture(params=sorted(QUANTIZERS))
def quantizer(request):
    return QUANTIZERS[request.param]()


def test_outputs_have_the_promised_shapes_dtypes_and_loss_terms(quantizer):
    assert isinstance(quantizer, Quantizer)
    x = keras.random.normal((5, 3, 2, 4), seed=0)
    out = quantizer(x, training=True)
    assert set(out) == {"quantized", "indices", *quantizer.loss_names}
    assert tuple(out["quantized"].shape) == (5, 3, 2, 4)
    assert tuple(out["indices"].shape) == quantizer.index_shape((5, 3, 2, 4))
    assert keras.backend.standardize_dtype(out["indices"].dtype) == "int32"
    indices = to_numpy(out["indices"])
    assert 0 <= indices.min() and indices.max() < quantizer.num_embeddings
    for name in quantizer.loss_names:
        assert tuple(out[name].shape) == (5,), name
    spec = quantizer.compute_output_spec(keras.KerasTensor((5, 3, 2, 4)))
    assert {name: tuple(s.shape) for name, s in spec.items()} == {
        name: tuple(value.shape) for name, value in out.items()
    }


def test_indices_decode_to_the_quantized_output(quantizer):
    x = keras.random.normal((6, 4), seed=1)
    quantizer(x, training=True)  # a training step first: EMA and first-batch seeding
    out = quantizer(x, training=False)
    np.testing.assert_array_equal(
        to_numpy(quantizer.inputs_to_indices(x)), to_numpy(out["indices"])
    )
    np.testing.assert_allclose(
        to_numpy(quantizer.indices_to_codes(out["indices"])), to_numpy(out["quantized"]), atol=1e-6
    )


def test_config_round_trip_gives_the_same_quantizer(quantizer):
    config = quantizer.get_config()
    clone = type(quantizer).from_config(config)
    assert clone.get_config() == config
    assert (clone.embedding_dim, clone.num_embeddings, clone.loss_names) == (
        quantizer.embedding_dim,
        quantizer.num_embeddings,
        quantizer.loss_names,
    )


def test_bad_inputs_get_clear_errors(quantizer):
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, \.\.\., 4\).*\(5, 3\)"):
        quantizer(np.zeros((5, 3), "float32"))
    with pytest.raises(TypeError, match=r"expects float inputs.*int32"):
        quantizer(np.zeros((5, 4), "int32"))
