"""The blocks of the latent-diffusion / taming-transformers autoencoder:
`ResnetBlock`, `AttentionBlock`, `Downsample`, `Upsample` (channels-last).

They compute what diffusers' `ResnetBlock2D` (no time embedding),
`Attention` of the VAE's middle block, `Downsample2D(padding=0)` and
`Upsample2D` compute, and what taming-transformers' `ResnetBlock`,
`AttnBlock`, `Downsample` and `Upsample` compute, so that their weights map
onto these one to one. `LDMEncoder` and `LDMDecoder` (`ldm_networks.py`) are
built from them.

Under a mixed dtype policy the group normalizations compute their statistics
in float32 (Keras's `GroupNormalization` upcasts) and the attention's scores
and softmax are float32; the convolutions run in the compute dtype.

Reference:
    Esser et al., "Taming Transformers for High-Resolution Image Synthesis",
    CVPR 2021; Rombach et al., "High-Resolution Image Synthesis with Latent
    Diffusion Models", CVPR 2022.
"""

import keras
from keras import layers, ops

from vqkeras import validation
from vqkeras.layers.conv2d import Conv2D as _VQKerasConv2D
from vqkeras.layers.conv2d import torch_channels_last_kernel


@keras.saving.register_keras_serializable(package="vqkeras")
class Conv2D(_VQKerasConv2D):
    """`vqkeras.layers.Conv2D` (same arguments and weights) that skips two
    copies of its input per call on the PyTorch backend.

    Keras's PyTorch convolution makes a channels-last input contiguous in
    channels-first order and then copies it back to channels-last memory for
    oneDNN; a channels-last tensor viewed as `(B, C, H, W)` already is
    channels-last memory. Those copies took about a tenth of an LDM training
    step on PyTorch's CPU. Stride-1 "same" and "valid" padding only (all the
    LDM blocks use); anything else goes through Keras.
    """

    def convolution_op(self, inputs, kernel):
        odd = all(k % 2 for k in self.kernel_size)
        if (
            keras.config.backend() != "torch"
            or self.data_format != "channels_last"
            or (self.padding == "same" and (max(self.strides) > 1 or not odd))
            or max(self.dilation_rate) > 1
        ):
            return super().convolution_op(inputs, kernel)
        import torch
        from torch.nn import functional

        x = ops.convert_to_tensor(inputs).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op when it is
        # (kh, kw, in, out) -> (out, in, kh, kw) channels-last, as Keras gives it.
        # Converted in the layer's autocast scope: the compute dtype.
        weight = torch_channels_last_kernel(ops.convert_to_tensor(kernel)).permute(3, 2, 0, 1)
        weight = weight.contiguous(memory_format=torch.channels_last)
        padding = tuple(k // 2 for k in self.kernel_size) if self.padding == "same" else 0
        y = functional.conv2d(x, weight, stride=self.strides, padding=padding, groups=self.groups)
        return y.permute(0, 2, 3, 1)


def check_groups(name, channels, groups):
    """Raises a ValueError unless GroupNorm's `groups` divide `channels`."""
    if channels % groups:
        raise ValueError(
            f"{name}: {channels} channels cannot be split into groups={groups} groups of "
            f"GroupNormalization; channels must be a multiple of groups."
        )


@keras.saving.register_keras_serializable(package="vqkeras")
class GroupNormalization(layers.GroupNormalization):
    """`keras.layers.GroupNormalization` over the last axis (same arguments,
    weights and float32 statistics) that runs PyTorch's fused `group_norm`
    on the PyTorch backend.

    Keras composes group normalization of a reshape, `moments` and
    elementwise ops, about 250 ms of a 1.5 s LDM training step on PyTorch's
    CPU (`benchmarks/ldm_train_step.py`); the fused kernel, which takes a
    channels-last tensor as it is, costs a fifth of that.
    """

    def call(self, inputs):
        if keras.config.backend() != "torch" or self.axis not in (-1, len(inputs.shape) - 1):
            return super().call(inputs)
        from torch.nn import functional

        # (B, ..., C) -> (B, C, ...): a view, channels-last in memory.
        order = (0, inputs.ndim - 1, *range(1, inputs.ndim - 1))
        x = inputs.permute(order).float()
        gamma = ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = ops.convert_to_tensor(self.beta) if self.center else None
        x = functional.group_norm(x, self.groups, gamma, beta, self.epsilon)
        restore = (0, *range(2, inputs.ndim), 1)
        return ops.cast(x.permute(restore), self.compute_dtype)


def group_norm(groups, epsilon, name, dtype):
    return GroupNormalization(groups=groups, epsilon=epsilon, name=name, dtype=dtype)


def _input_channels(layer, input_shape):
    channels = input_shape[-1]
    if channels is None or len(input_shape) != 4:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects inputs (B, H, W, C) with a known C. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    return int(channels)


@keras.saving.register_keras_serializable(package="vqkeras")
class ResnetBlock(layers.Layer):
    """Residual block of the LDM/taming autoencoder.

    `shortcut(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x)))))))`,
    with 3x3 convolutions and GroupNormalization; `shortcut` is the identity,
    or a 1x1 convolution when the channels change (diffusers'
    `conv_shortcut`, taming's `nin_shortcut`).

    Sublayers (created in `build`), in the order of `weights`: `norm1`
    (gamma, beta), `conv1` (kernel, bias), `norm2`, `conv2`, then
    `conv_shortcut` (None when the input has `out_channels` channels).

    Args:
        out_channels: channels of the output.
        dropout: dropout rate before `conv2` in training.
        groups: groups of the GroupNormalizations (they must divide the input
            channels and `out_channels`).
        epsilon: epsilon of the GroupNormalizations.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: features `(B, H, W, C)`.
        training: whether dropout is on.

    Returns:
        Features `(B, H, W, out_channels)`.
    """

    def __init__(self, out_channels, dropout=0.0, groups=32, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = validation.positive_int("out_channels", out_channels)
        self.dropout = validation.float_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.groups = validation.positive_int("groups", groups)
        self.epsilon = validation.float_in_range(
            "epsilon", epsilon, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )
        check_groups(f"ResnetBlock '{self.name}'", self.out_channels, self.groups)

    def build(self, input_shape):
        in_channels = _input_channels(self, input_shape)
        check_groups(f"The input of ResnetBlock '{self.name}'", in_channels, self.groups)
        policy = self.dtype_policy
        shape = tuple(input_shape)
        out_shape = shape[:-1] + (self.out_channels,)
        self.norm1 = group_norm(self.groups, self.epsilon, "norm1", policy)
        self.norm1.build(shape)
        self.conv1 = Conv2D(self.out_channels, 3, padding="same", name="conv1", dtype=policy)
        self.conv1.build(shape)
        self.norm2 = group_norm(self.groups, self.epsilon, "norm2", policy)
        self.norm2.build(out_shape)
        self.dropout_layer = layers.Dropout(self.dropout, dtype=policy)
        self.conv2 = Conv2D(self.out_channels, 3, padding="same", name="conv2", dtype=policy)
        self.conv2.build(out_shape)
        self.conv_shortcut = None
        if in_channels != self.out_channels:
            self.conv_shortcut = Conv2D(self.out_channels, 1, name="conv_shortcut", dtype=policy)
            self.conv_shortcut.build(shape)

    def call(self, inputs, training=None):
        x = self.conv1(ops.silu(self.norm1(inputs)))
        x = self.dropout_layer(ops.silu(self.norm2(x)), training=training)
        x = self.conv2(x)
        shortcut = inputs if self.conv_shortcut is None else self.conv_shortcut(inputs)
        return shortcut + x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "out_channels": self.out_channels,
                "dropout": self.dropout,
                "groups": self.groups,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vqkeras")
class AttentionBlock(layers.Layer):
    """Single-head self-attention over every position, with a residual.

    `x + proj_out(attention(q(h), k(h), v(h)))`, `h = norm(x)`, softmax of
    `q k^T / sqrt(C)` over all H*W positions: taming's `AttnBlock` (its 1x1
    convolutions are the Dense layers here) and diffusers' `Attention` of the
    VAE (`to_q`, `to_k`, `to_v`, `to_out.0`). Fully convolutional in the
    sense that any H and W work; the cost grows as (H*W)^2.

    Sublayers (created in `build`), in the order of `weights`: `norm`
    (gamma, beta), `q`, `k`, `v`, `proj_out` (each a `Dense` with kernel
    `(C, C)`, `x @ kernel + bias`: PyTorch's `(out, in)` weight transposed).

    Args:
        groups: groups of the GroupNormalization (they must divide C).
        epsilon: epsilon of the GroupNormalization.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: features `(B, H, W, C)`.

    Returns:
        Features of the same shape.
    """

    def __init__(self, groups=32, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.groups = validation.positive_int("groups", groups)
        self.epsilon = validation.float_in_range(
            "epsilon", epsilon, 0.0, float("inf"), low_inclusive=False, high_inclusive=False
        )

    def build(self, input_shape):
        channels = _input_channels(self, input_shape)
        check_groups(f"The input of AttentionBlock '{self.name}'", channels, self.groups)
        policy = self.dtype_policy
        shape = tuple(input_shape)
        self.norm = group_norm(self.groups, self.epsilon, "norm", policy)
        self.norm.build(shape)
        self.q = layers.Dense(channels, name="q", dtype=policy)
        self.k = layers.Dense(channels, name="k", dtype=policy)
        self.v = layers.Dense(channels, name="v", dtype=policy)
        self.proj_out = layers.Dense(channels, name="proj_out", dtype=policy)
        for layer in (self.q, self.k, self.v, self.proj_out):
            layer.build(shape)

    def call(self, inputs):
        h = self.norm(inputs)
        channels = inputs.shape[-1]
        # (B, H*W, 1 head, C), float32: under a mixed policy float16 scores
        # overflow and the softmax loses the small weights.
        tokens = (ops.shape(inputs)[0], -1, 1, channels)
        q, k, v = (ops.cast(ops.reshape(f(h), tokens), "float32") for f in (self.q, self.k, self.v))
        attended = ops.dot_product_attention(q, k, v, scale=channels**-0.5)
        attended = ops.cast(ops.reshape(attended, ops.shape(inputs)), self.compute_dtype)
        return inputs + self.proj_out(attended)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="vqkeras")
class Downsample(layers.Layer):
    """Halves height and width: zero padding of one row at the bottom and one
    column at the right, then a 3x3 convolution of stride 2 without padding
    (the asymmetric padding of diffusers' `Downsample2D(padding=0)` and
    taming's `Downsample`).

    Sublayer (created in `build`): `conv` (kernel `(3, 3, C, C)`, bias).

    Args:
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: features `(B, H, W, C)`.

    Returns:
        Features `(B, H // 2, W // 2, C)` (H, W at least 2).
    """

    def build(self, input_shape):
        channels = _input_channels(self, input_shape)
        self.conv = Conv2D(channels, 3, strides=2, name="conv", dtype=self.dtype_policy)
        shape = tuple(input_shape)
        padded = tuple(None if size is None else size + 1 for size in shape[1:3])
        self.conv.build((shape[0], *padded, channels))

    def call(self, inputs):
        return self.conv(ops.pad(inputs, ((0, 0), (0, 1), (0, 1), (0, 0))))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        half = lambda size: None if size is None else size // 2  # noqa: E731
        return (batch, half(height), half(width), channels)


@keras.saving.register_keras_serializable(package="vqkeras")
class Upsample(layers.Layer):
    """Doubles height and width: nearest-neighbour repetition, then a 3x3
    convolution (diffusers' `Upsample2D(use_conv=True)`, taming's
    `Upsample`).

    Sublayer (created in `build`): `conv` (kernel `(3, 3, C, C)`, bias).

    Args:
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: features `(B, H, W, C)`.

    Returns:
        Features `(B, 2 H, 2 W, C)`.
    """

    def build(self, input_shape):
        channels = _input_channels(self, input_shape)
        self.conv = Conv2D(channels, 3, padding="same", name="conv", dtype=self.dtype_policy)
        self.conv.build(self.compute_output_shape(input_shape))

    def call(self, inputs):
        return self.conv(ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), channels)
