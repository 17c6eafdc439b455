import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import subprocess_env

from vqkeras import distribution

BACKEND = keras.config.backend()
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# One epoch of a small EMA VQ-VAE (or KL-VAE) on one device, then the same
# epoch from the same weights on two (fake CPU) devices with the same global
# batch. Run in a fresh interpreter: the devices must be split before the
# backend starts. Restarts after one unused step and seeding from the first
# batch make every step exercise the random draws that replicas must agree on;
# so does the KL-VAE's Gaussian noise. A gradient VQ-VAE initialises its
# codebook by k-means on the first batch, whose statistics replicas must share. The generator and critic
# (`GeneratorCritic`) train with two optimizers.
EQUIVALENCE = """
import os, sys
backend, tests_dir, out, kind = sys.argv[1:]
os.environ["KERAS_BACKEND"] = backend
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, tests_dir)
from conftest import GeneratorCritic, blob_images, generator_critic_data, small_vqvae
from vqkeras import distribution
from vqkeras.models.factory import build_autoencoder

images = blob_images(48, seed=1)
data = generator_critic_data(48) if kind == "groups" else (images,)

def train(weights):
    keras.utils.set_random_seed(0)
    if kind == "vqvae":
        model = small_vqvae(restart_after_steps=1, init_from_first_batch=True)
    elif kind == "kmeans":
        model = small_vqvae("vector", kmeans_init=True, kmeans_iterations=3, seed=2)
    elif kind == "groups":
        model = GeneratorCritic()
    else:
        model = build_autoencoder(
            "klvae", images.shape[1:], latent_dim=2, channels=(8, 8), kl_weight=1e-3
        )
    model.build((None, *data[0].shape[1:]))
    if weights is not None:
        model.set_weights(weights)
    start = [np.array(w) for w in model.get_weights()]
    # SGD, not Adam: Adam would hide a wrongly scaled gradient. Two optimizer
    # groups get two rates.
    groups = {"critic_optimizer": keras.optimizers.SGD(0.2)} if kind == "groups" else {}
    model.compile(optimizer=keras.optimizers.SGD(0.5), **groups)
    history = model.fit(*data, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model, start, history.history

reference, start, logs = train(None)
with distribution.data_parallel() as replicas:
    model, _, parallel_logs = train(start)
    try:  # 45 images in batches of 8 leave a last batch of 5: uneven on 2 devices
        model.fit(*[array[:45] for array in data], batch_size=8, verbose=0)
        uneven_error = ""
    except ValueError as error:
        uneven_error = str(error)
if backend == "jax":
    copies = [[np.asarray(s.data) for s in v.value.addressable_shards] for v in model.weights]
else:
    local = model.distribute_strategy.experimental_local_results
    copies = [[np.asarray(c) for c in local(v.value)] for v in model.weights]
assert replicas == 2, replicas
spread = max(float(np.max(np.abs(c - c[0]))) for c in map(np.stack, copies))
np.savez(
    out,
    spread=spread,
    uneven_error=uneven_error,
    reference=np.concatenate([np.ravel(w) for w in reference.get_weights()]),
    parallel=np.concatenate([np.ravel(w) for w in model.get_weights()]),
    log_names=np.array(sorted(logs)),
    reference_logs=np.array([logs[k][0] for k in sorted(logs)]),
    parallel_logs=np.array([parallel_logs[k][0] for k in sorted(parallel_logs)]),
)
"""


def test_check_batch_size_accepts_even_splits():
    assert distribution.check_batch_size(64, 4) == 64
    assert distribution.check_batch_size(8, 2, num_samples=20) == 8  # last batch: 4
    assert distribution.check_batch_size(8, 2, num_samples=16) == 8  # no partial batch


def test_check_batch_size_names_the_batch_and_the_device_count():
    with pytest.raises(ValueError, match=r"batch_size=30 with 4 devices; use e.g. 28 or 32"):
        distribution.check_batch_size(30, 4)
    with pytest.raises(ValueError, match=r"batch_size=3 with 4 devices; use e.g. 4\."):
        distribution.check_batch_size(3, 4)
    with pytest.raises(ValueError, match=r"21 samples in batches of 8 leave a last batch of 5"):
        distribution.check_batch_size(8, 2, num_samples=21)
    with pytest.raises(
        ValueError, match=r"`batch_size` must be a positive integer. Received: batch_size=0"
    ):
        distribution.check_batch_size(0, 2)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend's error")
def test_torch_is_refused_with_a_pointer_to_the_docs():
    with pytest.raises(NotImplementedError, match=r"KERAS_BACKEND='torch'.*docs/distributed.md"):
        distribution.data_parallel()
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        distribution.device_count()
    assert distribution.replica_count() == 1


@pytest.mark.skipif(BACKEND == "torch", reason="data parallelism needs JAX or TensorFlow")
def test_one_device_context_sets_up_and_restores_the_previous_state():
    assert distribution.replica_count() == 1
    assert distribution.device_count() == len(distribution.available_devices()) >= 1
    with pytest.raises(ValueError, match=r"num_devices=99 exceeds the \d+ devices available"):
        with distribution.data_parallel(num_devices=99):
            pass
    with pytest.raises(ValueError, match="cannot be combined with multi_worker=True"):
        distribution.data_parallel(num_devices=1, multi_worker=True)
    with distribution.data_parallel(num_devices=1) as replicas:
        assert replicas == 1 == distribution.replica_count()
        if BACKEND == "jax":
            assert isinstance(keras.distribution.distribution(), keras.distribution.DataParallel)
        else:
            import tensorflow as tf

            assert isinstance(tf.distribute.get_strategy(), tf.distribute.MirroredStrategy)
    assert distribution.replica_count() == 1
    if BACKEND == "jax":
        assert keras.distribution.distribution() is None


def test_cross_replica_helpers_are_the_identity_outside_a_replica_step():
    x = np.arange(6, dtype="float32")
    np.testing.assert_array_equal(distribution.cross_replica_sum(x), x)
    assert distribution.replica_offset(5) == (0, 5)


@pytest.mark.skipif(BACKEND == "torch", reason="data parallelism needs JAX or TensorFlow")
@pytest.mark.parametrize(
    "kind, logged",
    [
        ("vqvae", {"loss", "commitment_loss", "reconstruction_loss", "perplexity"}),
        ("kmeans", {"loss", "codebook_loss", "commitment_loss", "reconstruction_loss"}),
        ("klvae", {"loss", "kl_loss", "reconstruction_loss"}),
        # Two optimizer groups and an adaptive weight from gradient norms,
        # which must be those of the global batch on every replica.
        ("groups", {"loss", "fit_loss", "generator_loss", "critic_loss", "adaptive_weight"}),
    ],
)
def test_two_devices_train_like_one_with_the_same_global_batch(tmp_path, kind, logged):
    out = tmp_path / "result.npz"
    result = subprocess.run(
        [sys.executable, "-c", EQUIVALENCE, BACKEND, TESTS_DIR, str(out), kind],
        env=subprocess_env(KERAS_BACKEND=BACKEND),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r = np.load(out)
    # The replicas' copies of every variable (weights, EMA state, seeds,
    # optimizer slots excluded) are identical, not merely close.
    assert float(r["spread"]) == 0.0
    # Training changed the weights, and two devices changed them as one did.
    assert not np.allclose(r["reference"], 0.0)
    # Two replicas sum their gradients and statistics in another order than
    # one device, and the training steps carry those last-bit differences on
    # (k-means assignments most): close, within 1e-4, not equal.
    np.testing.assert_allclose(r["parallel"], r["reference"], rtol=1e-4, atol=1e-4)
    assert logged <= set(r["log_names"])
    np.testing.assert_allclose(r["parallel_logs"], r["reference_logs"], rtol=1e-4)
    # fit checks that arrays split evenly before JAX fails deep inside XLA.
    assert str(r["uneven_error"]).startswith("fit(x=...): The last batch of an epoch")
    assert "45 samples in batches of 8 leave a last batch of 5" in str(r["uneven_error"])
