import numpy as np
import pytest
from conftest import blob_images, to_numpy

from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.models import KLVAE, RQVAE, VAE, VQVAE, VQVAE2, Autoencoder
from vqkeras.models.factory import FAMILIES, build_autoencoder

CLASSES = {
    "ae": Autoencoder,
    "vae": VAE,
    "klvae": KLVAE,
    "vqvae": VQVAE,
    "ema-vqvae": VQVAE,
    "rqvae": RQVAE,
    "vqvae2": VQVAE2,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_built_trains_and_reconstructs(family):
    images = blob_images(8, channels=3)
    model = build_autoencoder(
        family, (16, 16, 3), channels=(8, 16), num_embeddings=16, latent_dim=4, depth=2
    )
    assert type(model) is CLASSES[family] and model.built and model.name == family.replace("-", "_")
    model.compile(optimizer="adam")
    history = model.fit(images, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    metrics = evaluate_reconstructions(model, images)
    assert metrics["images"] == 8 and np.isfinite(metrics["psnr_db"])
    if family == "vqvae2":
        codes = model.encode_indices(images)
        assert to_numpy(codes["bottom"]).shape == (8, 4, 4)
        assert to_numpy(codes["top"]).shape == (8, 2, 2)
        assert metrics["bits_per_image"] == (16 + 4) * 4.0
        assert 0 < metrics["top_codebook_usage"] <= 1 and metrics["bottom_latent_grid"] == [4, 4]
    elif family == "rqvae":
        assert metrics["latent_grid"] == [4, 4, 2] and metrics["bits_per_image"] == 4 * 4 * 2 * 4
        # One codebook per level: statistics per level, as in the fit logs.
        usages = [metrics["codebook_usage_0"], metrics["codebook_usage_1"]]
        np.testing.assert_allclose(metrics["codebook_usage"], np.mean(usages))
        assert metrics["latent_grid_1"] == [4, 4] and "perplexity" not in metrics
    elif family in ("vqvae", "ema-vqvae"):
        assert metrics["bits_per_image"] == 4 * 4 * 4.0
    else:
        assert "bits_per_image" not in metrics


def test_latent_dim_defaults_and_vae_encoders_output_mean_and_log_variance():
    assert build_autoencoder("ema-vqvae", (8, 8, 1), channels=(4,)).quantizer.embedding_dim == 64
    assert build_autoencoder("klvae", (8, 8, 1), channels=(4,)).encoder.latent_dim == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"family": "gan"}, r"Unknown family 'gan'. Expected one of: ae, vae"),
        ({"image_shape": (30, 32, 3)}, r"multiples of 4. Received: image_shape=\(30, 32, 3\)"),
        ({"family": "vqvae2", "image_shape": (36, 36, 1)}, "multiples of 8"),
        ({"image_shape": (32, 32)}, r"\(height, width, channels\)"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = {"family": "ae", "image_shape": (32, 32, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        build_autoencoder(arguments.pop("family"), arguments.pop("image_shape"), **arguments)
