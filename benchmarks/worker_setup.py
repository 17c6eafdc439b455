"""What the benchmark scripts share: progress on stderr, and the thread caps and
backend check of the per-backend worker processes they spawn."""

import os
import sys


def log(message):
    print(message, file=sys.stderr, flush=True)


def thread_env(threads):
    """Environment that caps OpenMP (torch), BLAS and XLA (jax, tf jit) threads."""
    if threads is None:
        return {}
    eigen = "false" if threads == 1 else "true"
    flags = f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
    return {
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip(),
    }


def start_worker(backend, threads):
    """In a worker process: checks that Keras runs `backend`, and caps the
    threads of torch and TensorFlow (the environment of `thread_env` caps the rest)."""
    import keras

    if keras.config.backend() != backend:
        raise SystemExit(
            f"keras was imported with backend {keras.config.backend()!r}, not {backend!r}"
        )
    if threads is not None and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    if threads is not None and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def median_ms(fn, repeats, warmup):
    """Median wall time in ms of `fn()` over `repeats` calls after `warmup` untimed ones."""
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def matmul_gflops(size=1024, repeats=10):
    """The practical ceiling of this machine for the running backend: GFLOP/s
    of a float32 `(size, size) @ (size, size)` product through `keras.ops`
    (2 * size**3 floating-point operations), median of `repeats` warm calls."""
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    a, b = (ops.convert_to_tensor(rng.standard_normal((size, size), np.float32)) for _ in "ab")

    def product():
        # Reading one element back waits for the whole product on every backend.
        return ops.convert_to_numpy(ops.matmul(a, b)[0, 0])

    return 2 * size**3 / median_ms(product, repeats, warmup=1) / 1e6
