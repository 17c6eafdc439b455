"""What AdversarialKLVAE adds to KLVAE. The adversarial machinery itself
(adaptive weight, discriminator_start, LeCAM, each optimizer's group) is
VQGAN's, tested in tests/test_vqgan.py; here, that it composes with the
KL-VAE's own terms, latents and inference model."""

import json

import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

import vqkeras
from vqkeras.layers import ConvDecoder, ConvEncoder, PatchDiscriminator, PerceptualLoss
from vqkeras.models import KLVAE, AdversarialKLVAE
from vqkeras.models.optimizer_groups import group_variables


def _perceptual_loss():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="f1")(inputs)
    return PerceptualLoss(keras.Model(inputs, x, name="features"), ["f1"])


def small_model(**kwargs):
    """16x16 grayscale images to a 4x4 grid of 2 latent channels."""
    return AdversarialKLVAE(
        encoder=ConvEncoder(4, channels=(8, 8), num_residual_blocks=0),
        decoder=ConvDecoder(1, channels=(8, 8), num_residual_blocks=0),
        discriminator=PatchDiscriminator(filters=4, num_layers=2),
        perceptual_loss=_perceptual_loss(),
        **kwargs,
    )


def _compiled(model, rate=3e-3):
    model.build((None, 16, 16, 1))
    model.compile(optimizer=keras.optimizers.Adam(rate))
    return model


def test_fit_trains_both_groups_and_logs_the_kl_and_adversarial_terms():
    images = blob_images(32)
    model = _compiled(small_model(kl_weight=1e-3, discriminator_start=2), rate=1e-2)
    history = model.fit(images, batch_size=16, epochs=4, verbose=0).history
    assert set(history) == {
        "loss",
        "reconstruction_loss",
        "kl_loss",
        "perceptual_loss",
        "generator_loss",
        "discriminator_loss",
        "kl",
        "adaptive_weight",
        "real_logits",
        "fake_logits",
    }
    assert all(np.isfinite(v).all() for v in history.values())
    reconstruction = history["reconstruction_loss"]
    assert reconstruction[-1] < 0.9 * reconstruction[0], reconstruction
    # Two steps of the autoencoder alone, then six with the adversarial terms.
    assert history["adaptive_weight"][0] == 0.0 and history["adaptive_weight"][-1] > 0
    assert [int(o.iterations.numpy()) for o in model.optimizer.optimizers] == [8, 8]
    generator, discriminator = group_variables(model, model.optimizer_groups)
    assert {id(v) for v in discriminator} == {
        id(v) for v in model.discriminator.trainable_variables
    }
    autoencoder = [*model.encoder.trainable_variables, *model.decoder.trainable_variables]
    assert {id(v) for v in generator} == {id(v) for v in autoencoder}


def test_loss_terms_are_the_klvaes_and_the_adversarial_ones():
    images = blob_images(4)
    model = small_model(kl_weight=0.5, perceptual_weight=0.3)
    terms, outputs = model.compute_losses(images, training=False)
    terms = {name: float(to_numpy(value)) for name, value in terms.items()}
    reconstruction = to_numpy(outputs["reconstruction"])
    # L1 on the [0, 1] scale; the KL on the per-pixel scale, as in KLVAE.
    l1 = np.mean(np.abs(reconstruction - images / 255.0))
    kl = 0.5 * np.mean(to_numpy(outputs["kl"])) / (16 * 16)
    fake, real = to_numpy(outputs["fake_logits"]), to_numpy(outputs["real_logits"])
    hinge = np.mean(np.maximum(1 - real, 0)) + np.mean(np.maximum(1 + fake, 0))
    perceptual = 0.3 * np.mean(to_numpy(outputs["perceptual_distance"]))
    for name, expected in (
        ("reconstruction_loss", l1),
        ("kl_loss", kl),
        ("generator_loss", -np.mean(fake)),
        ("discriminator_loss", hinge),
        ("perceptual_loss", perceptual),
    ):
        np.testing.assert_allclose(terms[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)
    model.build((None, 16, 16, 1))
    assert model.last_decoder_kernel is model.decoder.output_conv.kernel


def test_its_preset_is_the_inference_klvae_and_its_keras_file_the_whole_model(tmp_path):
    images = blob_images(8)
    model = _compiled(small_model(kl_weight=1e-4, scaling_factor=2.0, discriminator_start=1))
    model.fit(images, batch_size=8, epochs=2, verbose=0)
    expected = model.decode_scaled(model.encode_scaled(images, sample=False))

    model.save_to_preset(tmp_path / "preset")
    loaded = vqkeras.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is KLVAE and not hasattr(loaded, "discriminator")
    assert (loaded.name, loaded.kl_weight, loaded.scaling_factor) == (model.name, 1e-4, 2.0)
    np.testing.assert_allclose(
        to_numpy(loaded.decode_scaled(loaded.encode_scaled(images, sample=False))),
        to_numpy(expected),
        atol=1e-6,
    )

    model.save(tmp_path / "model.keras")
    whole = keras.saving.load_model(tmp_path / "model.keras")
    assert type(whole) is AdversarialKLVAE
    assert json.loads(json.dumps(whole.get_config())) == json.loads(json.dumps(model.get_config()))
    assert int(to_numpy(whole.train_steps)) == 2
    np.testing.assert_array_equal(
        whole.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_the_deprecated_discriminator_weight_still_loads_as_adversarial_weight():
    config = json.loads(
        json.dumps(small_model(adversarial_weight=0.3, kl_weight=1e-4).get_config())
    )
    old = dict(config)
    old["discriminator_weight"] = old.pop("adversarial_weight")
    with pytest.warns(DeprecationWarning, match="AdversarialKLVAE: `discriminator_weight`"):
        clone = AdversarialKLVAE.from_config(old)
    assert (clone.adversarial_weight, clone.kl_weight) == (0.3, 1e-4)
    # The feature network's layer names are renumbered on loading: compare the rest.
    loaded = json.loads(json.dumps(clone.get_config()))
    assert {k: v for k, v in loaded.items() if k != "perceptual_loss"} == {
        k: v for k, v in config.items() if k != "perceptual_loss"
    }
