import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy
from keras.initializers import Constant

from vqkeras.evaluation import (
    conditional_sample_agreement,
    evaluate_prior,
    evaluate_reconstructions,
    feature_layer_name,
    feature_statistics,
    frechet_distance,
    frechet_distance_of_images,
    per_image_metrics,
    psnr_db,
    reconstruction_metrics,
    ssim_per_image,
)
from vqkeras.models.pixelcnn_prior import PixelCNNPrior
from vqkeras.presets import save_to_preset


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


def _ssim_reference(x, y):
    """SSIM of one pair of (H, W, C) images by the paper's definition, the 2-D
    window slid position by position (the local map averaged)."""
    coords = np.arange(11) - 5.0
    window = np.exp(-0.5 * (coords[:, None] ** 2 + coords[None, :] ** 2) / 1.5**2)
    window /= window.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            for c in range(x.shape[2]):
                a, b = x[i : i + 11, j : j + 11, c], y[i : i + 11, j : j + 11, c]
                mu_a, mu_b = np.sum(window * a), np.sum(window * b)
                var_a = np.sum(window * (a - mu_a) ** 2)
                var_b = np.sum(window * (b - mu_b) ** 2)
                cov = np.sum(window * (a - mu_a) * (b - mu_b))
                values.append(
                    (2 * mu_a * mu_b + c1)
                    * (2 * cov + c2)
                    / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return np.mean(values)


def _image_pairs(rng):
    """Noisy pairs of several shapes: noise, smooth images, a digit-like blob on black."""
    pairs = []
    for shape, noise in [((3, 32, 32, 3), 0.05), ((3, 13, 20, 2), 0.3), ((3, 28, 28, 1), 1.0)]:
        images = rng.uniform(size=shape)
        pairs.append((images, np.clip(images + rng.normal(0, noise, shape), 0, 1)))
    smooth = rng.uniform(size=(4, 36, 36, 3))
    smooth = sum(smooth[:, i : i + 32, j : j + 32] for i in range(5) for j in range(5)) / 25
    pairs.append((smooth, np.clip(smooth + rng.normal(0, 0.03, smooth.shape), 0, 1)))
    digits = np.zeros((4, 28, 28, 1))
    digits[:, 8:20, 10:18] = rng.uniform(size=(4, 12, 8, 1))
    pairs.append((digits, np.clip(digits + rng.normal(0, 0.01, digits.shape), 0, 1)))
    return [(x.astype("float32"), y.astype("float32")) for x, y in pairs]


def test_ssim_matches_the_definition():
    rng = np.random.default_rng(1)
    for images, reconstructions in _image_pairs(rng)[:2]:
        expected = [_ssim_reference(x, y) for x, y in zip(images, reconstructions)]
        np.testing.assert_allclose(
            ssim_per_image(images, reconstructions, batch_size=2), expected, rtol=0, atol=1e-12
        )


def test_ssim_matches_tf_image_ssim():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(2)
    for images, reconstructions in _image_pairs(rng):
        expected = tf.image.ssim(images, reconstructions, max_val=1.0).numpy()
        np.testing.assert_allclose(
            ssim_per_image(images, reconstructions), expected, rtol=0, atol=1e-5
        )


def test_ssim_rejects_images_smaller_than_its_window_and_mismatched_shapes():
    images = np.zeros((2, 10, 32, 3))
    with pytest.raises(ValueError, match="at least 11x11 pixels"):
        ssim_per_image(images, images)
    with pytest.raises(ValueError, match=r"Received shapes \(2, 32, 32, 3\) and \(2, 32, 32, 1\)"):
        ssim_per_image(np.zeros((2, 32, 32, 3)), np.zeros((2, 32, 32, 1)))


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


def test_psnr_is_minus_ten_log10_of_the_mse_floored_for_exact_reconstructions():
    np.testing.assert_allclose(psnr_db(np.array([1.0, 0.01, 1e-4])), [0.0, 20.0, 40.0])
    # A zero MSE is floored at 1e-12: a finite 120 dB.
    assert psnr_db(0.0) == pytest.approx(120.0)


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


def test_per_image_metrics_of_images_of_several_sizes():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(3, 16, 16, 1), dtype="uint8")
    reconstructions = images / 255.0 + rng.normal(0.0, 0.05, size=images.shape)
    # On images of one size: those of reconstruction_metrics, per image.
    metrics = per_image_metrics(images, reconstructions)
    assert metrics["mse"].shape == (3,)
    expected = reconstruction_metrics(images, reconstructions)
    for key in ("mse", "psnr_db", "ssim"):
        np.testing.assert_allclose(np.mean(metrics[key]), expected[key], rtol=1e-5)
    # Several sizes, in order; no SSIM below its 11x11 window.
    mixed = [images[0], images[1, :12, :5], images[2, :13, :11]]
    outputs = [reconstructions[0], reconstructions[1, :12, :5], reconstructions[2, :13, :11]]
    metrics = per_image_metrics(mixed, outputs)
    np.testing.assert_allclose(
        metrics["mse"][1], np.mean((np.clip(outputs[1], 0, 1) - mixed[1] / 255.0) ** 2), rtol=1e-5
    )
    assert np.isnan(metrics["ssim"][1]) and np.isfinite(metrics["ssim"][[0, 2]]).all()
    np.testing.assert_allclose(
        metrics["ssim"][2],
        ssim_per_image(mixed[2][None] / 255.0, np.clip(outputs[2][None], 0, 1)),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match=r"Image 1: expected a reconstruction of its shape"):
        per_image_metrics(mixed, [outputs[0], outputs[0], outputs[2]])


def _random_covariance(rng, width, rank=None):
    factor = rng.normal(size=(width, rank or width))
    return factor @ factor.T / width


def test_frechet_distance_of_diagonal_covariances_has_its_closed_form():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.1, 2.0, 5), rng.uniform(0.1, 2.0, 5)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert frechet_distance(mean_a, np.diag(var_a), mean_a, np.diag(var_a)) == pytest.approx(
        0.0, abs=1e-12
    )


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    # Full-rank and rank-deficient covariances (fewer images than features).
    for rank in (None, 3):
        cov_a, cov_b = _random_covariance(rng, 6, rank), _random_covariance(rng, 6)
        mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
        root = np.real(linalg.sqrtm(cov_a @ cov_b))
        expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)
        got = frechet_distance(mean_a, cov_a, mean_b, cov_b)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
        # A distance: symmetric.
        np.testing.assert_allclose(frechet_distance(mean_b, cov_b, mean_a, cov_a), got, rtol=1e-8)


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    features = np.random.default_rng(2).normal(size=(10, 3))
    mean, covariance = feature_statistics(features)
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features.T, ddof=1), rtol=1e-12)
    assert feature_statistics(features[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match=r"N >= 2 images. Received shape \(1, 3\)"):
        feature_statistics(features[:1])


def test_frechet_distance_refuses_statistics_of_other_widths():
    mean, covariance = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"means \(3,\) and \(4,\), covariances \(3, 3\) and"):
        frechet_distance(mean, covariance, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"one feature width F.*covariances \(3, 3\) and \(3, 2\)"):
        frechet_distance(mean, covariance, mean, np.ones((3, 2)))


def _classifier(named_features=True):
    """A tiny classifier of 8x8 grayscale images."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(6, activation="relu", name="features")
            if named_features
            else keras.layers.Dropout(0.5, name="dropout"),
            keras.layers.Dense(3, activation="softmax", name="scores"),
        ],
        name="tiny",
    )


def test_the_feature_layer_is_named_features_or_the_one_before_the_output():
    assert feature_layer_name(_classifier()) == "features"
    # Dropout layers are skipped: the features are those the output layer sees.
    assert feature_layer_name(_classifier(named_features=False)) == "flatten"
    lone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")], name="lone")
    with pytest.raises(ValueError, match=r"'lone' has no layer before its output layer"):
        feature_layer_name(lone)


def test_frechet_distance_of_images_in_a_classifiers_features(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 8, 8, 1)).astype("uint8")
    classifier = _classifier()
    result = frechet_distance_of_images(images, images / 255.0, classifier, batch_size=5)
    assert result["features"] == "tiny/features"
    assert (result["images"], result["other_images"]) == (12, 12)
    np.testing.assert_allclose(result["frechet_distance"], 0.0, atol=1e-9)

    # Against NumPy statistics of the layer's outputs, for a preset by name.
    save_to_preset(classifier, tmp_path / "tiny_preset")
    noisy = np.clip(images / 255.0 + rng.normal(0, 0.3, images.shape), 0, 1)
    result = frechet_distance_of_images(images[:10], noisy, str(tmp_path / "tiny_preset"), "conv")
    assert result["features"] == f"{tmp_path / 'tiny_preset'}/conv"
    conv = keras.Model(classifier.inputs[0], classifier.get_layer("conv").output)
    stats = [
        feature_statistics(to_numpy(conv(x.astype("float32"))).reshape(len(x), -1))
        for x in (images[:10] / 255.0, noisy)
    ]
    np.testing.assert_allclose(
        result["frechet_distance"], frechet_distance(*stats[0], *stats[1]), rtol=1e-4
    )
    assert result["frechet_distance"] > 0.01
    with pytest.raises(ValueError, match=r"at least 2 images in each set. Received 1 other_images"):
        frechet_distance_of_images(images, images[:1], classifier)
