import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers.masked_conv2d import MaskedConv2D


class Wrapped(keras.layers.Layer):
    """The layer behind a `call` that takes `training`, as `gradients` needs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def call(self, x, training=None):
        return self.layer(x)


def dependence(layer, x, i, j):
    """Which input positions output (i, j) depends on, from backend gradients
    (exactly 0.0 elsewhere, on any machine: no unmasked weight reaches there)."""
    grad = gradients(layer, x, lambda y: keras.ops.sum(y[:, i, j, :]))[0]
    return np.abs(grad).sum(axis=(0, 3)) > 0


@pytest.mark.parametrize(
    "mask_type, expected",
    [
        ("A", [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0] * 5, [0] * 5]),
        ("B", [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0] * 5, [0] * 5]),
    ],
)
def test_mask_keeps_rows_above_and_pixels_left_of_the_center(mask_type, expected):
    layer = MaskedConv2D(mask_type, filters=2, kernel_size=5)
    layer.build((None, 8, 8, 3))
    np.testing.assert_array_equal(to_numpy(layer.kernel_mask())[:, :, 0, 0], expected)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_output_equals_a_conv2d_with_the_masked_kernel(mask_type):
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 3)).astype("float32")
    layer = MaskedConv2D(mask_type, filters=4, kernel_size=(3, 5), activation="tanh")
    expected = layer(x)
    reference = keras.layers.Conv2D(4, (3, 5), padding="same", activation="tanh")
    reference.build(x.shape)
    kernel, bias = (to_numpy(w) for w in layer.weights)
    reference.set_weights([kernel * to_numpy(layer.kernel_mask()), bias])
    np.testing.assert_allclose(to_numpy(expected), to_numpy(reference(x)), atol=1e-5)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_output_depends_only_on_earlier_pixels_and_masked_weights_get_no_gradient(mask_type):
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype("float32")
    layer = MaskedConv2D(mask_type, filters=3, kernel_size=3)
    layer(x)
    wrapped = Wrapped(layer)
    wrapped(x)
    seen = dependence(wrapped, x, 2, 2)
    expected = np.zeros((5, 5), dtype=bool)
    expected[1, 1:4] = True
    expected[2, 1] = True
    expected[2, 2] = mask_type == "B"
    np.testing.assert_array_equal(seen, expected)

    kernel_grad = gradients(wrapped, x, lambda y: keras.ops.sum(y**2))[1]
    mask = to_numpy(layer.kernel_mask())[:, :, 0, 0]
    assert np.all(kernel_grad[mask == 0] == 0)
    assert np.all(np.abs(kernel_grad[mask == 1]).sum(axis=-1) > 0)


def test_bias_and_activation_are_those_of_conv2d():
    layer = MaskedConv2D("A", filters=2, kernel_size=3, bias_initializer="ones", activation="relu")
    y = to_numpy(layer(np.zeros((1, 4, 4, 1), dtype="float32")))
    np.testing.assert_allclose(y, np.ones_like(y))
    y = to_numpy(layer(-10.0 * np.ones((1, 4, 4, 1), dtype="float32")))
    assert y.min() >= 0.0


def test_config_round_trip_gives_identical_outputs():
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 3)).astype("float32")
    layer = MaskedConv2D("B", filters=4, kernel_size=3, use_bias=False, dilation_rate=2)
    expected = to_numpy(layer(x))
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == layer.get_config()
    assert restored.mask_type == "B" and restored.built
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(restored(x)), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mask_type": "C"}, "mask_type='C'"),
        ({"mask_type": "a"}, "mask_type='a'"),
        ({"padding": "valid"}, "padding='valid'"),
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"strides": 2}, "strides=2"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = {"mask_type": "A", "filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        MaskedConv2D(**arguments)
