"""`keras.layers.Conv2D` whose single-filter kernels PyTorch's CPU fallback
convolution can differentiate.

On PyTorch, Keras permutes a kernel `(kh, kw, in, out)` to `(out, in, kh, kw)`
and keeps it as is when that view is already channels-last contiguous. With
`out == 1` it is, but the size-1 `out` axis keeps stride 1, and PyTorch then
"suggests" the contiguous memory format for it. Where PyTorch does not use
oneDNN for a CPU convolution (bfloat16 on CPUs without AVX-512 BF16 or AMX,
float16 on CPUs without AVX-512 FP16, float32 for a batch of one with a small
kernel and input) it falls back to `slow_conv2d`, whose backward allocates the
kernel gradient in that suggested format but checks it against the
channels-last input's: `RuntimeError: slow_conv2d: grad_weight must be
contiguous`. Giving the size-1 axis the stride PyTorch itself gives a
channels-last tensor makes both agree. It is a view of the same values: no
copy, and the variables (so the saved weights) are unchanged.
"""

import keras
from keras import layers


def torch_channels_last_kernel(kernel):
    """`kernel` `(kh, kw, in, 1)` as a view whose permutation to
    `(1, in, kh, kw)` has PyTorch's canonical channels-last strides; any
    other kernel, or any other backend, as it is."""
    if keras.config.backend() != "torch" or kernel.shape[-1] != 1:
        return kernel
    kernel = keras.ops.convert_to_tensor(kernel).contiguous()
    height, width, channels, _ = kernel.shape
    strides = (width * channels, channels, 1, height * width * channels)
    return kernel.as_strided(kernel.shape, strides)


@keras.saving.register_keras_serializable(package="vqkeras")
class Conv2D(layers.Conv2D):
    """`keras.layers.Conv2D`, same arguments and weights; with `filters=1` its
    kernel gradient also works on PyTorch's CPU fallback convolution (see the
    module docstring). vqkeras's layers use it where `filters` can be 1."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, torch_channels_last_kernel(kernel))
