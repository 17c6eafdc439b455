import numpy as np
from conftest import blob_images, small_vqvae, to_numpy

from vqkeras.evaluation import evaluate_reconstructions, ssim_per_image


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
