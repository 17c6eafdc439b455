import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import EMAVectorQuantizer


def built_quantizer(codebook, **kwargs):
    layer = EMAVectorQuantizer(*codebook.shape, **kwargs)
    layer.build((None, codebook.shape[1]))
    layer.embedding_sum.assign(codebook)  # cluster sizes start at 1
    return layer


def numpy_ema_step(cluster_size, embedding_sum, flat, decay, epsilon):
    """One training step of the EMA codebook, written out from the formulas."""
    total = cluster_size.sum()
    num_embeddings = len(cluster_size)
    smoothed = (cluster_size + epsilon) / (total + num_embeddings * epsilon) * total
    codebook = embedding_sum / smoothed[:, None]
    indices = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(indices, minlength=num_embeddings).astype("float64")
    sums = np.zeros_like(embedding_sum)
    np.add.at(sums, indices, flat)
    cluster_size = decay * cluster_size + (1 - decay) * counts
    embedding_sum = decay * embedding_sum + (1 - decay) * sums
    return indices, cluster_size, embedding_sum


def test_ema_update_matches_numpy_over_two_steps():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(8, 3)).astype("float32")
    layer = built_quantizer(codebook, decay=0.9, epsilon=1e-3)
    cluster_size, embedding_sum = np.ones(8), codebook.astype("float64")
    for step in range(2):
        x = rng.normal(size=(4, 5, 3)).astype("float32")
        indices, cluster_size, embedding_sum = numpy_ema_step(
            cluster_size, embedding_sum, x.reshape(-1, 3), decay=0.9, epsilon=1e-3
        )
        out = layer(x, training=True)
        np.testing.assert_array_equal(to_numpy(out["indices"]).ravel(), indices, f"step {step}")
        np.testing.assert_allclose(layer.cluster_size.numpy(), cluster_size, rtol=1e-5)
        np.testing.assert_allclose(layer.embedding_sum.numpy(), embedding_sum, rtol=1e-5, atol=1e-6)
    total = cluster_size.sum()
    smoothed = (cluster_size + 1e-3) / (total + 8e-3) * total
    np.testing.assert_allclose(
        to_numpy(layer.codebook), embedding_sum / smoothed[:, None], rtol=1e-5, atol=1e-6
    )


def test_codebook_changes_only_in_training():
    codebook = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    layer = built_quantizer(codebook, restart_after_steps=1)
    x = np.random.default_rng(2).normal(size=(16, 3)).astype("float32")
    before = [v.numpy().copy() for v in layer.weights]
    layer(x)
    layer(x, training=False)
    for old, variable in zip(before, layer.weights):
        np.testing.assert_array_equal(variable.numpy(), old)
    layer(x, training=True)
    assert not np.allclose(layer.embedding_sum.numpy(), codebook)


def test_no_gradient_to_codebook_and_identity_to_inputs():
    codebook = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    layer = built_quantizer(codebook)
    assert layer.trainable_weights == []
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    weights = np.random.default_rng(3).normal(size=(5, 3)).astype("float32")
    import keras

    (grad_x,) = gradients(
        layer, x, lambda out: keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(weights))
    )
    np.testing.assert_allclose(grad_x, weights, rtol=1e-6)


def test_dead_code_restart_revives_unused_codes():
    rng = np.random.default_rng(4)
    # Codes 2..7 sit far from every input: they never win a vector.
    codebook = np.concatenate([rng.normal(size=(2, 3)), 100.0 + rng.normal(size=(6, 3))])
    codebook = codebook.astype("float32")
    x = rng.normal(size=(64, 3)).astype("float32")

    without = built_quantizer(codebook, restart_after_steps=None)
    with_restart = built_quantizer(codebook, restart_after_steps=2, seed=7)
    for _ in range(2):
        without(x, training=True)
        with_restart(x, training=True)

    assert set(np.unique(to_numpy(without(x)["indices"]))) <= {0, 1}
    revived = to_numpy(with_restart.codebook)[2:]
    # Each revived code is re-seeded with one of the inputs.
    distances = ((revived[:, None] - x[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(distances, 0.0, atol=1e-4)
    assert len(np.unique(to_numpy(with_restart(x)["indices"]))) > 2
    np.testing.assert_array_equal(with_restart.steps_unused.numpy()[2:], 0.0)


def test_init_from_first_batch_seeds_codebook_with_inputs():
    x = np.random.default_rng(5).normal(loc=50.0, size=(32, 3)).astype("float32")
    layer = EMAVectorQuantizer(8, 3, init_from_first_batch=True, decay=0.0, seed=1)
    out = layer(x)  # inference does not initialise
    assert np.abs(to_numpy(layer.codebook)).max() < 10
    out = layer(x, training=True)
    # With decay 0 the codebook becomes the mean of the vectors assigned to
    # each code; every code seeded from the batch is used at least once.
    used = np.unique(to_numpy(out["indices"]))
    codebook = to_numpy(layer.codebook)
    assert np.all(np.abs(codebook[used] - 50.0) < 5.0)
    assert layer.initialized.numpy() == 1.0


def test_config_round_trip():
    layer = EMAVectorQuantizer(
        32,
        4,
        commitment_cost=0.5,
        decay=0.95,
        epsilon=1e-4,
        restart_after_steps=10,
        init_from_first_batch=True,
        seed=3,
    )
    clone = EMAVectorQuantizer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decay": 1.5}, "decay=1.5"),
        ({"decay": 1.0}, r"decay.*\[0.0, 1.0\).*decay=1.0"),
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"restart_after_steps": 0}, "restart_after_steps=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EMAVectorQuantizer(8, 4, **kwargs)
