import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy
from keras.initializers import Constant

from vqkeras.evaluation import (
    conditional_sample_agreement,
    evaluate_prior,
    evaluate_reconstructions,
    reconstruction_metrics,
    ssim_per_image,
)
from vqkeras.models.pixelcnn_prior import PixelCNNPrior


def test_metrics_match_numpy():
    images = blob_images(12)
    model = small_vqvae(num_embeddings=16)
    metrics = evaluate_reconstructions(model, images, batch_size=5)

    reconstructions = np.clip(model.predict(images, verbose=0), 0, 1)
    mse = ((reconstructions - images / 255.0) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics["mse"], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr_db"], (-10 * np.log10(mse)).mean(), rtol=1e-5)
    indices = to_numpy(model.encode_indices(images))
    np.testing.assert_allclose(metrics["codebook_usage"], len(np.unique(indices)) / 16)
    assert metrics["latent_grid"] == [4, 4]
    assert metrics["bits_per_image"] == 16 * 4.0
    assert metrics["images"] == 12
    assert 1.0 <= metrics["perplexity"] <= len(np.unique(indices)) + 1e-4


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ssim_per_image(images, images), 1.0, rtol=1e-6)
    slightly, badly = (np.clip(images + rng.normal(0, s, images.shape), 0, 1) for s in (0.05, 0.3))
    assert np.all(ssim_per_image(images, badly) < ssim_per_image(images, slightly))
    assert np.all(ssim_per_image(images, slightly) < 1.0)


def tiny_prior(num_classes):
    return PixelCNNPrior(
        16, (4, 4), num_classes=num_classes, filters=8, num_blocks=2, kernel_size=3, embedding_dim=4
    )


def test_evaluate_prior_reports_the_logged_nll():
    codes = np.random.default_rng(0).integers(0, 16, size=(10, 4, 4)).astype("int32")
    labels = np.arange(10, dtype="int32") % 3
    prior = tiny_prior(num_classes=3)
    metrics = evaluate_prior(prior, codes, labels, batch_size=4)
    prior.compile()
    logged = prior.evaluate(codes, labels, batch_size=10, verbose=0, return_dict=True)
    assert metrics["grids"] == 10 and "bits_per_dim" not in metrics
    np.testing.assert_allclose(metrics["nll_nats_per_code"], logged["nll"], rtol=1e-5)
    # An untrained prior is close to uniform over the 16 codes.
    np.testing.assert_allclose(metrics["nll_nats_per_code"], np.log(16), rtol=0.1)


def test_conditional_sample_agreement_counts_per_class():
    vqvae = small_vqvae(num_embeddings=16)
    vqvae.build((None, 16, 16, 1))
    # A "classifier" that calls every image a 0: it agrees on class 0 only.
    classifier = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer=Constant([5, 0, 0])),
        ]
    )
    result = conditional_sample_agreement(
        tiny_prior(num_classes=3), vqvae, classifier, samples_per_class=4, seed=1
    )
    assert result["samples"] == 12
    assert result["agreement_per_class"] == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(result["agreement"], 1 / 3)
    assert "options" not in result
    # Further sampling options reach the prior's `sample` and are recorded.
    greedy = conditional_sample_agreement(
        tiny_prior(num_classes=3), vqvae, classifier, samples_per_class=2, top_k=1
    )
    assert greedy["options"] == {"top_k": 1} and greedy["samples"] == 6
    with pytest.raises(ValueError, match=r"top_k=0"):
        conditional_sample_agreement(tiny_prior(num_classes=3), vqvae, classifier, top_k=0)
    with pytest.raises(ValueError, match="not class-conditional"):
        conditional_sample_agreement(tiny_prior(num_classes=None), vqvae, classifier)


def test_reconstruction_metrics_of_given_reconstructions():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(4, 16, 16, 1), dtype="uint8")
    # Out-of-range values are clipped to [0, 1] before anything is measured.
    reconstructions = images / 255.0 + rng.normal(0.0, 0.05, size=images.shape)
    metrics = reconstruction_metrics(images, reconstructions)
    mse = np.mean((np.clip(reconstructions, 0, 1) - images / 255.0) ** 2, axis=(1, 2, 3))
    assert metrics["images"] == 4
    np.testing.assert_allclose(metrics["mse"], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr_db"], np.mean(-10 * np.log10(mse)), rtol=1e-5)
    assert reconstruction_metrics(images, images / 255.0)["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"shape \(4, 16, 16, 1\)\. Received shape=\(4, 16, 16\)"):
        reconstruction_metrics(images, reconstructions[..., 0])
