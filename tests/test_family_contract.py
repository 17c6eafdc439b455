"""What every registered autoencoder family promises, checked family by family.

Each family's own test file keeps what is particular to it (its loss terms
against NumPy, its latent space, its parts); what they all share is here, so
that a new family registered in `vqkeras.families` is held to it at once.
"""

import keras
import numpy as np
import pytest
from conftest import assert_weights_load_on_other_backends, blob_images, options_of, to_numpy

from vqkeras.codes import codes_by_name
from vqkeras.families import families_of_kind
from vqkeras.layers import Quantizer
from vqkeras.models.factory import build_autoencoder

FAMILIES = families_of_kind("autoencoder")

NUM_EMBEDDINGS = 16


def small_model(family, channels=1):
    """16x16 images to 4x4 latent grids (2x2 and 4x4 for "vqvae2"). The
    adversarial families train against their discriminator from the first
    step, with a small weight (at 0.8, the adversarial gradient as large as
    the reconstruction's, the fit test's few steps lower an L1 loss by less
    than a third)."""
    options = options_of(
        family,
        latent_dim=4,
        num_embeddings=NUM_EMBEDDINGS,
        depth=2,
        kl_weight=0.1 if family == "vae" else 1e-3,
        adversarial_weight=0.2,
    )
    return build_autoencoder(family, (16, 16, channels), channels=(8, 16), **options)


def _quantizers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, Quantizer)]


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_lowers_the_loss_and_logs_every_term(family):
    images = blob_images(256)
    model = small_model(family)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = model.fit(images, epochs=4, batch_size=32, validation_data=(images[:64],), verbose=0)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)

    logged = ["loss", *model.loss_names, *(metric.name for metric in model.extra_metrics)]
    assert sorted(history.history) == sorted(logged + [f"val_{name}" for name in logged])
    # Four short epochs: every family at least a third below where it started
    # (a VAE's sampled latent is the slowest; a broken step stays near 1x).
    assert after["reconstruction_loss"] < 0.67 * before["reconstruction_loss"]
    total = sum(after[name] for name in model.loss_names)
    np.testing.assert_allclose(after["loss"], total, rtol=1e-4)
    for name, value in after.items():
        if "codebook_usage" in name:
            assert 0 < value <= 1, name
        if "perplexity" in name:
            assert 1 <= value <= NUM_EMBEDDINGS, name


@pytest.mark.parametrize("family", FAMILIES)
def test_codes_are_described_without_a_forward_pass_and_decode_back(family):
    images = blob_images(8)
    model = small_model(family)
    grids = model.code_grids()
    bigger = model.code_grids((32, 32, 1))  # twice the size the model was built for
    assert len(bigger) == len(grids)
    for grid, big in zip(grids, bigger):
        assert big.spatial_shape == (2 * grid.shape[0], 2 * grid.shape[1])
        assert (big.name, big.depth, big.num_embeddings, big.conditioned_on) == (
            grid.name,
            grid.depth,
            grid.num_embeddings,
            grid.conditioned_on,
        )
    if not grids:  # continuous latents
        assert not _quantizers(model)
        return
    codes = codes_by_name(grids, model.encode_indices(images))
    for grid in grids:
        array = to_numpy(codes[grid.name])
        assert array.shape == (8, *grid.shape) and array.dtype == np.int32, grid
        assert 0 <= array.min() and array.max() < grid.num_embeddings
    # Decoding the returned indices gives the decoded quantized latents.
    latents = model.encode(images)
    decoded = model.decode(**latents) if isinstance(latents, dict) else model.decode(latents)
    np.testing.assert_allclose(
        to_numpy(model.decode_indices(model.encode_indices(images))), to_numpy(decoded), atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_keras_file_and_weights_file_round_trips(family, tmp_path):
    images = blob_images(32)
    model = small_model(family)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=16, verbose=0)  # move weights and EMA state
    expected = model.predict(images, verbose=0)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    if model.code_grids():
        keras.tree.map_structure(
            lambda a, b: np.testing.assert_array_equal(to_numpy(a), to_numpy(b)),
            loaded.encode_indices(images),
            model.encode_indices(images),
        )
    loaded.fit(images, epochs=1, batch_size=16, verbose=0)  # still trainable

    model.save_weights(tmp_path / "model.weights.h5")
    fresh = type(model).from_config(model.get_config())
    fresh.build((None, 16, 16, 1))
    fresh.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(fresh.predict(images, verbose=0), expected, atol=1e-6)


def _saving_backend(family):
    """The backend that saves `family`'s weights for the cross-backend test:
    the families take turns, so each backend saves and each loads some of
    them, and the suite does not repeat every pair three times."""
    return ("tensorflow", "jax", "torch")[FAMILIES.index(family) % 3]


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.slow(backend=_saving_backend(f))) for f in FAMILIES],
)
def test_weights_load_on_the_other_backends(family, tmp_path):
    images = blob_images(16, channels=3)
    model = small_model(family, channels=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)  # move weights and EMA state
    assert_weights_load_on_other_backends(model, images, tmp_path)


def _with_nan():
    images = np.full((4, 16, 16, 1), 0.5, "float32")
    images[1, 2, 3, 0] = np.nan
    return images


BAD_IMAGES = [
    (np.zeros((4, 16, 16), "uint8"), ValueError, r"rank 4.*\(4, 16, 16\).*images\[\.\.\., None\]"),
    (np.zeros((16, 16, 1), "uint8"), ValueError, r"rank 4.*One image\? .*images\[None\]"),
    (np.zeros((4, 16, 16, 3), "uint8"), ValueError, r"1 channel\(s\).*3 channel\(s\)\.$"),
    (np.zeros((4, 1, 16, 16), "uint8"), ValueError, r"16 channel\(s\)\. Channels first\?"),
    (np.zeros((4, 18, 18, 1), "uint8"), ValueError, r"multiples of \d+.*height 18"),
    (np.zeros((4, 16, 16, 1), "int32"), TypeError, r"dtype=int32\. .*astype\('uint8'\)"),
    ([np.zeros((16, 16, 1), "uint8")] * 2, TypeError, r"one array.*list of 2 ndarray.*np\.stack"),
    (["a.png", "b.png"], TypeError, r"list of 2 str: file paths\?"),
    (np.full((4, 16, 16, 1), "a"), TypeError, r"floats in \[0, 1\].*dtype=<U1"),
    # The most common mistake: floats left on the [0, 255] scale.
    (np.full((4, 16, 16, 1), 255.0, "float32"), ValueError, r"in \[0, 1\].*\[255, 255\].*255"),
    (_with_nan(), ValueError, r"finite images.*1 NaN or inf.*index \(1, 2, 3, 0\)"),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_images_get_clear_errors(family):
    # One model per family, every bad batch through each entry point.
    model = small_model(family)
    model.compile(optimizer="adam")
    entry_points = [
        lambda images: model.fit(images, verbose=0),
        lambda images: model.predict(images, verbose=0),
        lambda images: model.evaluate(images, verbose=0),
        model.encode,
    ]
    if model.code_grids():
        entry_points.append(model.encode_indices)
    for images, error, message in BAD_IMAGES:
        for entry_point in entry_points:
            with pytest.raises(error, match=message):
                entry_point(images)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_bfloat16_keeps_codes_and_losses_in_float32(family):
    keras.config.set_dtype_policy("mixed_bfloat16")
    images = blob_images(32)
    model = small_model(family)
    model.compile(optimizer="adam")
    history = model.fit(images, epochs=1, batch_size=16, verbose=0)
    assert all(np.isfinite(values[0]) for values in history.history.values())
    terms, _ = model.compute_losses(images[:4], training=False)
    assert {keras.backend.standardize_dtype(t.dtype) for t in terms.values()} == {"float32"}
    assert model.predict(images[:2], verbose=0).dtype == np.float32
    # Codes are decided in float32 (bfloat16 confuses close codes) and the
    # codebooks are stored in float32; the convolutions run in bfloat16.
    for quantizer in _quantizers(model):
        assert quantizer.input_dtype == "float32"
        for variable in quantizer.weights:
            assert keras.backend.standardize_dtype(variable.dtype) != "bfloat16", variable
    assert {layer.compute_dtype for layer in model._flatten_layers() if layer.weights} >= {
        "bfloat16"
    }
