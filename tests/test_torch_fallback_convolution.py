"""PyTorch's CPU fallback convolution (`slow_conv2d`), which PyTorch uses when
oneDNN has no kernel for the dtype: bfloat16 on CPUs without AVX-512 BF16 or
AMX (issue 21), float16 on CPUs without AVX-512 FP16, and float32 for some
batches of one. Its backward rejected the kernel of a 1-filter convolution as
Keras lays it out (`slow_conv2d: grad_weight must be contiguous`)."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import gradients, subprocess_env

from vqkeras.layers import ConvDecoder

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "torch",
    reason="tests PyTorch's CPU convolution (KERAS_BACKEND=torch)",
)


def single_channel_decoder(dtype="float32"):
    # 1 output channel and 1 residual channel: the 3x3 convolutions with one filter.
    decoder = ConvDecoder(1, channels=(8,), residual_channels=1, dtype=dtype)
    decoder.build((None, 4, 4, 4))
    return decoder


# torch.backends.mkldnn.flags() warns about Intel GPUs' TF32.
@pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_single_filter_convolutions_train_on_the_fallback_convolution(policy):
    import torch

    latents = np.random.default_rng(0).normal(size=(2, 4, 4, 4)).astype("float32")
    decoder = single_channel_decoder(policy)
    weights = [np.asarray(w) for w in decoder.get_weights()]
    loss = lambda y: keras.ops.mean(keras.ops.square(keras.ops.cast(y, "float32")))  # noqa: E731
    with torch.backends.mkldnn.flags(enabled=False):
        fallback = gradients(decoder, latents, loss)
    # The gradients of float32 through oneDNN: the same in float32, close
    # (relative norm of the difference) under a 16-bit policy; bfloat16 is
    # off by up to 4% here through oneDNN too.
    reference = single_channel_decoder()
    reference.set_weights(weights)
    expected = gradients(reference, latents, loss)
    assert len(fallback) == len(expected)
    for got, want in zip(fallback, expected):
        if policy == "float32":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        else:
            tolerance = 0.1 if policy == "mixed_bfloat16" else 0.01
            assert np.linalg.norm(got - want) <= tolerance * np.linalg.norm(want)


# Runs with oneDNN limited to AVX2, which has no bfloat16 convolution: the
# CPUs of issue 21, on any x86 CPU.
FIT_WITHOUT_ONEDNN_BFLOAT16 = """
import torch
if torch.ops.mkldnn._is_mkldnn_bf16_supported():
    print("oneDNN still has bfloat16 convolutions here")
    raise SystemExit(3)
import keras, numpy as np
from vqkeras.layers import ConvDecoder, ConvEncoder, VectorQuantizer
from vqkeras.models import VQVAE
keras.config.set_dtype_policy("mixed_bfloat16")
model = VQVAE(
    ConvEncoder(4, channels=(8,), num_residual_blocks=1),
    ConvDecoder(1, channels=(8,), num_residual_blocks=1),
    VectorQuantizer(8, 4),
)
model.compile(optimizer="adam")
images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype="uint8")
history = model.fit(images, epochs=1, batch_size=4, verbose=0)
assert all(np.isfinite(v[0]) for v in history.history.values()), history.history
"""


def test_fit_under_mixed_bfloat16_without_onednn_bfloat16(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FIT_WITHOUT_ONEDNN_BFLOAT16],
        env=subprocess_env(KERAS_BACKEND="torch", ONEDNN_MAX_CPU_ISA="AVX2"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == 3:
        pytest.skip(f"ONEDNN_MAX_CPU_ISA=AVX2 cannot force the fallback: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr[-3000:]
