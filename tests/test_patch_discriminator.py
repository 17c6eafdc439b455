import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers import PatchDiscriminator


def _images(n=3, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, channels)).astype("float32")


@pytest.mark.parametrize("num_layers, grid", [(1, 8), (2, 4), (3, 2)])
def test_one_logit_per_patch(num_layers, grid):
    discriminator = PatchDiscriminator(filters=4, num_layers=num_layers)
    logits = discriminator(_images())
    assert tuple(logits.shape) == (3, grid, grid, 1)
    assert discriminator.compute_output_shape((3, 16, 16, 3)) == (3, grid, grid, 1)


def test_filters_double_per_layer_up_to_the_cap():
    discriminator = PatchDiscriminator(filters=4, num_layers=4, max_filters=16)
    discriminator.build((None, 32, 32, 1))
    assert [c.filters for c in discriminator.convolutions] == [4, 8, 16, 16]
    assert discriminator.output_conv.filters == 1
    layer_types = {type(layer).__name__ for layer in discriminator._flatten_layers()}
    assert "BatchNormalization" not in layer_types
    assert "GroupNormalization" in layer_types
    plain = PatchDiscriminator(filters=4, num_layers=2, normalization=None)
    plain.build((None, 16, 16, 1))
    assert not any(
        isinstance(layer, keras.layers.GroupNormalization) for layer in plain._flatten_layers()
    )


@pytest.mark.parametrize("normalization", ["group", None])
def test_each_images_logits_ignore_the_rest_of_the_batch(normalization):
    # No batch statistics: real and fake batches cannot leak into each other.
    discriminator = PatchDiscriminator(filters=8, num_layers=2, normalization=normalization)
    images = _images(4)
    together = to_numpy(discriminator(images, training=True))
    alone = to_numpy(discriminator(images[:1], training=True))
    np.testing.assert_allclose(together[:1], alone, rtol=1e-5, atol=1e-6)
    # Training and inference agree too.
    np.testing.assert_allclose(to_numpy(discriminator(images)), together, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_images_and_every_weight():
    discriminator = PatchDiscriminator(filters=4, num_layers=2)
    images = _images(2, channels=1)
    discriminator.build(images.shape)
    grads = gradients(discriminator, images, lambda y: keras.ops.sum(y))
    assert len(grads) == 1 + len(discriminator.trainable_variables)
    assert all(g is not None and np.any(g != 0) for g in grads)


def test_config_round_trip_rebuilds_the_same_layer():
    discriminator = PatchDiscriminator(filters=4, num_layers=2, max_filters=6, normalization=None)
    images = _images(2)
    expected = to_numpy(discriminator(images))
    config = discriminator.get_config()
    assert {k: config[k] for k in ("filters", "num_layers", "max_filters", "normalization")} == {
        "filters": 4,
        "num_layers": 2,
        "max_filters": 6,
        "normalization": None,
    }
    copy = PatchDiscriminator.from_config(config)
    copy.build(images.shape)
    copy.set_weights(discriminator.get_weights())
    np.testing.assert_allclose(to_numpy(copy(images)), expected, rtol=1e-6)


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(
        ValueError, match=r"`filters` must be a positive integer. Received: filters=0"
    ):
        PatchDiscriminator(filters=0)
    with pytest.raises(ValueError, match=r"`num_layers` must be a positive integer"):
        PatchDiscriminator(num_layers=0)
    with pytest.raises(ValueError, match=r"max_filters.*at least.*filters=64, max_filters=32"):
        PatchDiscriminator(filters=64, max_filters=32)
    with pytest.raises(ValueError, match=r"normalization.*\['group', None\].*'batch'"):
        PatchDiscriminator(normalization="batch")
    with pytest.raises(ValueError, match=r"multiples of 4.*height 10"):
        PatchDiscriminator(filters=4, num_layers=2).build((None, 10, 16, 3))
