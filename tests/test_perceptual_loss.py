import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.layers import PerceptualLoss


def _feature_model():
    """1x1 convolutions, so that NumPy can compute the same features."""
    inputs = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(4, 1, activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(5, 1, name="b")(a)
    c = keras.layers.Conv2D(2, 1, name="c")(b)
    return keras.Model(inputs, c, name="features")


def _images(n=3, size=4, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, channels)).astype("float32")


def _numpy_distance(model, x, y, preprocess, eps=1e-10):
    (w1, b1), (w2, b2) = model.get_layer("a").get_weights(), model.get_layer("b").get_weights()

    def unit_features(images):
        a = np.maximum(preprocess(images) @ w1[0, 0] + b1, 0.0)
        b = a @ w2[0, 0] + b2
        return [f / (np.sqrt(np.sum(f**2, axis=-1, keepdims=True)) + eps) for f in (a, b)]

    return sum(
        np.mean((fx - fy) ** 2, axis=(1, 2, 3))
        for fx, fy in zip(unit_features(x), unit_features(y))
    )


@pytest.mark.parametrize(
    "preprocessing, numpy_preprocess",
    [
        ("tf", lambda x: x),
        ("torch", lambda x: ((x + 1) / 2 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]),
        ("caffe", lambda x: (x[..., ::-1] + 1) * 127.5 - [103.939, 116.779, 123.68]),
        ("unit", lambda x: (x + 1) / 2),
    ],
)
def test_distance_matches_numpy(preprocessing, numpy_preprocess):
    model = _feature_model()
    loss = PerceptualLoss(model, ["a", "b"], preprocessing=preprocessing)
    x, y = _images(seed=1), _images(seed=2)
    got = to_numpy(loss(x, y))
    assert got.shape == (3,) and got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_distance(model, x, y, numpy_preprocess), rtol=1e-4)


def test_caffe_preprocessing_is_keras_vgg16s():
    loss = PerceptualLoss(_feature_model(), ["a"], preprocessing="caffe")
    x = _images()
    expected = keras.applications.vgg16.preprocess_input((x + 1.0) * 127.5)
    np.testing.assert_allclose(to_numpy(loss._preprocess(x)), expected, rtol=1e-5, atol=1e-4)


def test_zero_for_identical_images_symmetric_and_per_sample():
    loss = PerceptualLoss(_feature_model(), ["a", "b"])
    x, y = _images(seed=3), _images(seed=4)
    np.testing.assert_allclose(to_numpy(loss(x, x)), 0.0, atol=1e-7)
    np.testing.assert_allclose(to_numpy(loss(x, y)), to_numpy(loss(y, x)), rtol=1e-6)
    # Each sample's distance depends on that sample only.
    np.testing.assert_allclose(to_numpy(loss(x[1:2], y[1:2])), to_numpy(loss(x, y))[1:2], rtol=1e-5)
    assert np.all(to_numpy(loss(x, y)) > 0)


def test_grayscale_images_are_repeated_to_three_channels():
    loss = PerceptualLoss(_feature_model(), ["a", "b"])
    x, y = _images(channels=1, seed=5), _images(channels=1, seed=6)
    np.testing.assert_allclose(
        to_numpy(loss(x, y)), to_numpy(loss(np.repeat(x, 3, -1), np.repeat(y, 3, -1))), rtol=1e-6
    )


def test_the_feature_network_is_frozen_and_cut_at_the_last_compared_layer():
    model = _feature_model()
    loss = PerceptualLoss(model, ["a", "b"])
    assert loss.trainable_variables == []
    assert len(loss.non_trainable_variables) == 4  # a and b: kernels and biases; not c
    assert [layer.name for layer in loss.extractor.layers][-1] == "b"


def test_config_round_trip():
    loss = PerceptualLoss(_feature_model(), ["a", "b"], preprocessing="torch", epsilon=1e-8)
    config = loss.get_config()
    copy = PerceptualLoss.from_config(config)
    assert (copy.layer_names, copy.preprocessing, copy.epsilon) == (("a", "b"), "torch", 1e-8)
    copy.set_weights(loss.get_weights())
    x, y = _images(seed=7), _images(seed=8)
    np.testing.assert_allclose(to_numpy(copy(x, y)), to_numpy(loss(x, y)), rtol=1e-6)


def test_from_vgg16_uses_the_lpips_layers():
    # weights=None: random weights, nothing downloaded.
    loss = PerceptualLoss.from_vgg16(weights=None)
    assert loss.layer_names == (
        "block1_conv2",
        "block2_conv2",
        "block3_conv3",
        "block4_conv3",
        "block5_conv3",
    )
    assert loss.preprocessing == "caffe"
    assert loss.trainable_variables == []
    x, y = _images(2, size=16, seed=9), _images(2, size=16, seed=10)
    distance = to_numpy(loss(x, y))
    assert distance.shape == (2,) and np.all(distance > 0) and np.all(distance <= 4 * 5)


def test_from_classifier_compares_its_convolutions_on_the_unit_scale(tmp_path):
    classifier = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(4, 3, name="c2"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="digits",
    )
    from vqkeras.presets import save_to_preset

    save_to_preset(classifier, tmp_path / "digits")
    loss = PerceptualLoss.from_classifier(str(tmp_path / "digits"))
    assert loss.layer_names == ("c1", "c2") and loss.preprocessing == "unit"
    x, y = _images(2, size=8, channels=1, seed=3), _images(2, size=8, channels=1, seed=4)
    direct = PerceptualLoss(classifier, ["c1", "c2"], preprocessing="unit")
    np.testing.assert_allclose(to_numpy(loss(x, y)), to_numpy(direct(x, y)), rtol=1e-5)
    assert PerceptualLoss.from_classifier(classifier, ["c2"]).layer_names == ("c2",)
    with pytest.raises(ValueError, match=r"'digits' takes images of 8x8 pixels.*\(2, 16, 16, 1\)"):
        loss(_images(2, size=16, channels=1), _images(2, size=16, channels=1))
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="mlp")
    with pytest.raises(
        ValueError, match="'mlp' has no Conv2D layer to compare: pass `layer_names`"
    ):
        PerceptualLoss.from_classifier(dense_only)


def test_bad_arguments_get_clear_errors():
    model = _feature_model()
    with pytest.raises(ValueError, match=r"\['d'\] are not layers of the feature model 'features'"):
        PerceptualLoss(model, ["a", "d"])
    with pytest.raises(ValueError, match=r"at least one layer"):
        PerceptualLoss(model, [])
    with pytest.raises(
        ValueError, match=r"preprocessing.*\['tf', 'caffe', 'torch', 'unit'\].*'vgg'"
    ):
        PerceptualLoss(model, ["a"], preprocessing="vgg")
    with pytest.raises(TypeError, match=r"functional Keras model.*Received: <Conv2D"):
        PerceptualLoss(keras.layers.Conv2D(3, 1), ["a"])
    with pytest.raises(ValueError, match=r"same shape.*\(3, 4, 4, 3\) and \(3, 8, 8, 3\)"):
        PerceptualLoss(model, ["a"])(_images(), _images(size=8))


def test_the_features_are_computed_in_float32_under_mixed_precision():
    reference = _feature_model()
    keras.config.set_dtype_policy("mixed_float16")
    mixed = _feature_model()
    mixed.set_weights(reference.get_weights())
    loss = PerceptualLoss(mixed, ["a", "b"])
    layers = [
        layer for layer in loss.extractor.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    assert {layer.dtype_policy.name for layer in layers} == {"float32"}
    x, y = _images(seed=11), _images(seed=12)
    expected = to_numpy(PerceptualLoss(reference, ["a", "b"])(x, y))
    np.testing.assert_allclose(to_numpy(loss(x, y)), expected, rtol=1e-5)
