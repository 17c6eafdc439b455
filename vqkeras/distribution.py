"""Data-parallel training on several devices, with the engine of each backend.

vqkeras adds no engine of its own: on JAX it uses Keras's
`keras.distribution.DataParallel`, on TensorFlow `tf.distribute.MirroredStrategy`
(`MultiWorkerMirroredStrategy` across hosts). Build, compile and fit the model
inside `data_parallel()`:

    with vqkeras.distribution.data_parallel() as replicas:
        model = vqkeras.models.factory.build_autoencoder("ema-vqvae", (32, 32, 3))
        model.compile(optimizer="adam")
        model.fit(images, batch_size=64 * replicas, epochs=10)

`batch_size` is the global batch: each of the `replicas` devices gets an equal
share of it, and the model learns exactly as on one device with that batch
(the loss terms are scaled and the EMA codebook statistics summed across
replicas; see docs/distributed.md). The PyTorch backend is not supported: its
engine (`DistributedDataParallel`) needs a process per device and a training
loop of its own, which `model.fit` does not have.
"""

import contextlib

import keras

from vqkeras import validation

DOCS = "docs/distributed.md"


def _backend():
    backend = keras.config.backend()
    if backend not in ("tensorflow", "jax"):
        raise NotImplementedError(
            f"Data-parallel training works on the 'jax' and 'tensorflow' backends. Received: "
            f"KERAS_BACKEND={backend!r}. On PyTorch, train on one device, or write your own loop "
            f"with torch.nn.parallel.DistributedDataParallel: see {DOCS}."
        )
    return backend


def _tf_devices():
    import tensorflow as tf

    # GPUs when there are any; else the logical CPUs (one unless split, e.g. for tests).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def available_devices():
    """Names of the local devices that `data_parallel` spreads a batch over:
    the accelerators when there are any, else the CPU devices."""
    if _backend() == "jax":
        return keras.distribution.list_devices()
    return _tf_devices()


def device_count():
    """How many local devices `data_parallel()` would use, on this backend."""
    return len(available_devices())


def replica_count(model=None):
    """The number of replicas that a training step is split over (1 without
    data parallelism): of the JAX distribution in force, or on TensorFlow of
    `model`'s strategy (the one it was built under) or else the strategy in scope."""
    backend = keras.config.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if isinstance(distribution, keras.distribution.DataParallel):
            return distribution.device_mesh.devices.size
        return 1
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy() if model is None else model.distribute_strategy
        return strategy.num_replicas_in_sync
    return 1


def check_batch_size(batch_size, num_replicas, num_samples=None):
    """Raises a ValueError unless every batch splits evenly over the replicas.

    JAX refuses a batch that does not split evenly; TensorFlow would split it
    unevenly and so weight the samples of the smaller shares more. Both need
    `batch_size` to be a multiple of `num_replicas`, and so must be the last,
    partial batch of `num_samples` samples when there is one.

    Args:
        batch_size: the global batch size.
        num_replicas: the number of devices it is spread over.
        num_samples: the number of samples per epoch, when known.

    Returns:
        `batch_size`.
    """
    batch_size = validation.positive_int("batch_size", batch_size)
    num_replicas = validation.positive_int("num_replicas", num_replicas)
    if batch_size % num_replicas:
        below = batch_size - batch_size % num_replicas
        above = below + num_replicas
        suggestion = f"{below} or {above}" if below else str(above)
        raise ValueError(
            f"The batch size must be a multiple of the number of devices, so that each device "
            f"gets the same share. Received: batch_size={batch_size} with {num_replicas} "
            f"devices; use e.g. {suggestion}."
        )
    if num_samples is not None:
        num_samples = validation.positive_int("num_samples", num_samples)
        last = num_samples % batch_size
        if last % num_replicas:
            raise ValueError(
                f"The last batch of an epoch must also split evenly over the devices. Received: "
                f"{num_samples} samples in batches of {batch_size} leave a last batch of {last}, "
                f"not a multiple of {num_replicas} devices; use "
                f"{num_samples - num_samples % num_replicas} samples (a multiple of "
                f"{num_replicas})."
            )
    return batch_size


def _check_num_devices(num_devices, devices):
    if num_devices is None:
        return devices
    num_devices = validation.positive_int("num_devices", num_devices)
    if num_devices > len(devices):
        raise ValueError(
            f"num_devices={num_devices} exceeds the {len(devices)} devices available: {devices}."
        )
    return devices[:num_devices]


@contextlib.contextmanager
def _jax_data_parallel(num_devices, multi_worker):
    if multi_worker:
        # Reads the coordinator address, process count and id from the
        # environment (see keras.distribution.initialize); must come before any
        # JAX computation.
        keras.distribution.initialize()
        devices = keras.distribution.list_devices()
    else:
        devices = _check_num_devices(num_devices, keras.distribution.list_devices())
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def _tf_data_parallel(num_devices, multi_worker):
    import tensorflow as tf

    if multi_worker:
        # The cluster comes from the TF_CONFIG environment variable.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.MirroredStrategy(_check_num_devices(num_devices, _tf_devices()))
    with strategy.scope():
        yield strategy.num_replicas_in_sync


def data_parallel(num_devices=None, multi_worker=False):
    """A context in which models are built, compiled and fitted data-parallel.

    Each training step splits the global batch evenly over the devices; every
    device holds a full copy of the weights and of the EMA codebooks, and all
    copies stay identical. What differs from one device is only float rounding.

    - JAX: `keras.distribution.DataParallel` over the local devices (the
      distribution in force before is restored on exit). A model built inside
      keeps its replicated weights; it predicts and evaluates on batches of any
      size once the context is left.
    - TensorFlow: `tf.distribute.MirroredStrategy` over the local GPUs, or the
      logical CPUs when there is no GPU. A model built inside keeps the
      strategy for `fit`, `evaluate` and `predict`.
    - PyTorch: not supported (a `NotImplementedError` points to the docs).

    Args:
        num_devices: use the first this many local devices (default: all).
        multi_worker: train on several hosts: JAX calls
            `keras.distribution.initialize()` (coordinator, process count and
            id from the environment; enter the context before any other JAX
            computation) and uses every host's devices; TensorFlow uses
            `tf.distribute.MultiWorkerMirroredStrategy` (cluster from
            `TF_CONFIG`). `num_devices` must then be None.

    Returns:
        A context manager whose value is the number of replicas, the number
        that global batch sizes must be multiples of (`check_batch_size`).

    Example:

    >>> with data_parallel() as replicas:
    ...     model = build_autoencoder("ema-vqvae", (28, 28, 1))
    ...     model.compile(optimizer="adam")
    ...     model.fit(images, batch_size=32 * replicas)
    """
    backend = _backend()
    if multi_worker and num_devices is not None:
        raise ValueError(
            "num_devices chooses local devices and cannot be combined with multi_worker=True, "
            f"which uses every device of every host. Received: num_devices={num_devices}."
        )
    if backend == "jax":
        return _jax_data_parallel(num_devices, multi_worker)
    return _tf_data_parallel(num_devices, multi_worker)


def cross_replica_sum(x):
    """`x` summed over the replicas of a TensorFlow `tf.distribute` step.

    Statistics that a layer updates in `call` without gradients (EMA codebooks)
    must be the same on every replica: each replica adds up the statistics of
    its share of the batch, then all of them get the sum. Outside a
    multi-replica TensorFlow step (one device, or JAX, whose step sees the
    whole global batch) this returns `x` unchanged.
    """
    if keras.config.backend() != "tensorflow":
        return x
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_offset(local_size):
    """`(offset, total)`: where this replica's share starts in the global batch,
    and the global batch size, from the local size of each replica.

    Replica i of a `tf.distribute` step holds the i-th slice of the global
    batch; outside one, the offset is 0 and the total `local_size`.
    """
    if keras.config.backend() != "tensorflow":
        return 0, local_size
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, local_size
    replicas = context.num_replicas_in_sync
    replica = context.replica_id_in_sync_group
    mine = tf.one_hot(replica, replicas, dtype="int32") * tf.cast(local_size, "int32")
    sizes = context.all_reduce(tf.distribute.ReduceOp.SUM, mine)
    offset = tf.reduce_sum(tf.where(tf.range(replicas) < replica, sizes, 0))
    return offset, tf.reduce_sum(sizes)
