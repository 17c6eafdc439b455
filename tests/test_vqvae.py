import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import blob_images, small_vqvae, to_numpy

from vqkeras.layers import ConvDecoder, ConvEncoder, VectorQuantizer
from vqkeras.models import VQVAE


def test_fit_accepts_tf_data_and_py_dataset():
    images = blob_images(64)
    labels = np.arange(64) % 10

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return images[index * 16 : (index + 1) * 16]

    model = small_vqvae()
    model.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    for data in (dataset, Batches()):
        history = model.fit(data, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])


def test_uint8_and_float_images_are_the_same_input():
    images = blob_images(8)
    model = small_vqvae()
    from_uint8 = model.predict(images, verbose=0)
    from_float = model.predict(images.astype("float32") / 255.0, verbose=0)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)
    assert from_uint8.shape == (8, 16, 16, 1) and from_uint8.dtype == np.float32


def test_indices_round_trip_equals_decoding_the_quantized_latents():
    images = blob_images(8, channels=3)
    model = small_vqvae("gradient", channels=3)
    indices = model.encode_indices(images)
    assert tuple(indices.shape) == (8, 4, 4)
    assert keras.backend.standardize_dtype(indices.dtype) == "int32"
    latents = model.encode(images)
    np.testing.assert_allclose(
        to_numpy(model.decode_indices(indices)), to_numpy(model.decode(latents)), atol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(model.decode(latents)), model.predict(images, verbose=0), atol=1e-5
    )


def test_evaluate_and_predict_leave_ema_state_unchanged():
    images = blob_images(64)
    model = small_vqvae(restart_after_steps=1, init_from_first_batch=True)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=32, verbose=0)
    before = [v.numpy().copy() for v in model.non_trainable_weights]
    model.evaluate(images, verbose=0)
    model.predict(images, verbose=0)
    model.encode_indices(images)
    for old, variable in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


def test_nan_in_training_stops_with_a_clear_error():
    images = blob_images(64).astype("float32") / 255.0
    images[10, 3, 3, 0] = np.nan
    model = small_vqvae()
    model.compile(optimizer="adam")
    # A NumPy array is refused before training; a dataset is not read up
    # front, so its NaN reaches the loss and stops fit.
    with pytest.raises(ValueError, match=r"finite images.*index \(10, 3, 3, 0\)"):
        model.fit(images, epochs=2, batch_size=16, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(16)
    with pytest.raises(FloatingPointError, match=r"non-finite.*loss=nan.*NaN or inf"):
        model.fit(dataset, epochs=2, verbose=0)


def test_bad_indices_get_clear_errors():
    model = small_vqvae(num_embeddings=16)
    model.build((None, 16, 16, 1))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[16, 16\]"):
        model.decode_indices(np.full((2, 4, 4), 16))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\).*\[-1, 0\]"):
        model.decode_indices(np.array([[[0, -1]]]))
    with pytest.raises(TypeError, match=r"integer indices.*float32"):
        model.decode_indices(np.zeros((2, 4, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width\).*\(2, 16\)"):
        model.decode_indices(np.zeros((2, 16), "int32"))
    with pytest.raises(ValueError, match=r"\(4, 4\)\. One grid\? .*indices\[None\]"):
        model.decode_indices(np.zeros((4, 4), "int32"))


def test_mismatched_parts_are_rejected_at_construction():
    with pytest.raises(ValueError, match=r"latent_dim \(8\).*embedding_dim \(4\)"):
        VQVAE(ConvEncoder(8), ConvDecoder(1), VectorQuantizer(16, 4))
    with pytest.raises(TypeError, match="quantizer.*Received: Dense"):
        VQVAE(ConvEncoder(8), ConvDecoder(1), keras.layers.Dense(4))
