import json

import keras
import numpy as np
import pytest
from conftest import blob_images, to_numpy

import vqkeras
from vqkeras.layers import (
    ConvDecoder,
    ConvEncoder,
    PatchDiscriminator,
    PerceptualLoss,
    VectorQuantizer,
)
from vqkeras.models import VQGAN, VQVAE
from vqkeras.models.optimizer_groups import group_variables

ALL_TERMS = (
    "loss",
    "reconstruction_loss",
    "codebook_loss",
    "commitment_loss",
    "perceptual_loss",
    "generator_loss",
    "discriminator_loss",
    "lecam_loss",
)
EXTRA_LOGS = ("adaptive_weight", "real_logits", "fake_logits", "perplexity", "codebook_usage")


def _perceptual_loss():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="f1")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="f2")(x)
    return PerceptualLoss(keras.Model(inputs, x, name="features"), ["f1", "f2"])


def small_vqgan(perceptual=True, **kwargs):
    """16x16 grayscale images to a 4x4 grid, with a 4x4 grid of logits."""
    return VQGAN(
        encoder=ConvEncoder(8, channels=(8, 8), num_residual_blocks=0),
        decoder=ConvDecoder(1, channels=(8, 8), num_residual_blocks=0),
        quantizer=VectorQuantizer(16, 8),
        discriminator=PatchDiscriminator(filters=4, num_layers=2),
        perceptual_loss=_perceptual_loss() if perceptual else None,
        **kwargs,
    )


def _compiled(model, rate=3e-3, discriminator_rate=None, optimizer=keras.optimizers.Adam):
    model.build((None, 16, 16, 1))
    rate2 = rate if discriminator_rate is None else discriminator_rate
    model.compile(optimizer=optimizer(rate), discriminator_optimizer=optimizer(rate2))
    return model


def _json(config):
    return json.loads(json.dumps(config))


def _values(variables):
    return [np.array(to_numpy(v)) for v in variables]


def _generator_variables(model):
    return [
        *model.encoder.trainable_variables,
        *model.quantizer.trainable_variables,
        *model.decoder.trainable_variables,
    ]


def test_fit_lowers_the_reconstruction_loss_and_logs_every_term():
    images = blob_images(32)
    model = _compiled(small_vqgan(lecam_weight=0.1), rate=1e-2)
    history = model.fit(images, batch_size=16, epochs=4, verbose=0)
    assert set(history.history) == set(ALL_TERMS + EXTRA_LOGS)
    assert all(np.isfinite(v).all() for v in history.history.values())
    reconstruction = history.history["reconstruction_loss"]
    assert reconstruction[-1] < 0.9 * reconstruction[0], reconstruction
    # Both optimizers took every step; the step counter agrees.
    assert [int(o.iterations.numpy()) for o in model.optimizer.optimizers] == [8, 8]
    assert int(to_numpy(model.train_steps)) == 8
    # LeCAM's moving averages follow the logits in training.
    assert float(to_numpy(model.lecam_ema_real)) != 0.0
    assert float(to_numpy(model.lecam_ema_fake)) != 0.0
    assert all(w > 0 for w in history.history["adaptive_weight"])


def test_adversarial_terms_start_after_discriminator_start_steps():
    images = blob_images(16)
    model = _compiled(small_vqgan(perceptual=False, discriminator_start=2))
    discriminator = _values(model.discriminator.trainable_variables)
    first = model.fit(images, batch_size=8, epochs=1, verbose=0).history  # steps 0 and 1
    assert first["adaptive_weight"] == [0.0]
    assert first["generator_loss"] == [0.0] and first["discriminator_loss"] == [0.0]
    # The discriminator has not trained yet.
    for got, want in zip(_values(model.discriminator.trainable_variables), discriminator):
        np.testing.assert_array_equal(got, want)
    second = model.fit(images, batch_size=8, epochs=1, verbose=0).history  # steps 2 and 3
    assert second["adaptive_weight"][0] > 0
    assert second["discriminator_loss"][0] > 0 and second["generator_loss"][0] != 0
    assert int(to_numpy(model.train_steps)) == 4


@pytest.mark.parametrize("generator_rate, discriminator_rate", [(0.0, 0.1), (0.1, 0.0)])
def test_each_optimizer_moves_only_its_own_group(generator_rate, discriminator_rate):
    images = blob_images(8)
    model = _compiled(small_vqgan(), generator_rate, discriminator_rate, keras.optimizers.SGD)
    generator, discriminator = group_variables(model, model.optimizer_groups)
    assert {id(v) for v in discriminator} == {
        id(v) for v in model.discriminator.trainable_variables
    }
    assert {id(v) for v in generator} == {id(v) for v in _generator_variables(model)}
    assert model.perceptual_loss.trainable_variables == []
    before_g, before_d = _values(generator), _values(discriminator)
    model.fit(images, batch_size=8, epochs=1, verbose=0)
    for variables, old, rate in (
        (generator, before_g, generator_rate),
        (discriminator, before_d, discriminator_rate),
    ):
        changed = [not np.array_equal(a, b) for a, b in zip(_values(variables), old)]
        if rate == 0.0:
            assert not any(changed)
        else:
            assert any(changed)


class _GradientProbe(VQGAN):
    """Logs gradient norms of the step, through the adaptive-weight hook."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probes = [
            keras.metrics.Mean(name=name)
            for name in (
                "d_term_at_decoder",
                "d_term_at_discriminator",
                "g_term_at_decoder",
                "reconstruction_at_decoder",
            )
        ]

    def adaptive_loss_weights(self, terms, gradient_norm):
        weights = super().adaptive_loss_weights(terms, gradient_norm)
        decoder, discriminator = self.last_decoder_kernel, self.discriminator.output_conv.kernel
        d_terms = ["discriminator_loss", "lecam_loss"]
        weights["d_term_at_decoder"] = gradient_norm(d_terms, decoder)
        weights["d_term_at_discriminator"] = gradient_norm(d_terms, discriminator)
        weights["g_term_at_decoder"] = gradient_norm(["generator_loss"], decoder)
        reconstruction_terms = ["reconstruction_loss", "perceptual_loss"]
        weights["reconstruction_at_decoder"] = gradient_norm(reconstruction_terms, decoder)
        return weights

    @property
    def extra_metrics(self):
        return [*super().extra_metrics, *self.probes]

    def update_extra_metrics(self, outputs):
        super().update_extra_metrics(outputs)
        for probe in self.probes:
            probe.update_state(outputs["loss_weights"][probe.name])


def test_gradients_of_the_terms_and_the_adaptive_weight():
    model = _GradientProbe(
        encoder=ConvEncoder(8, channels=(8, 8), num_residual_blocks=0),
        decoder=ConvDecoder(1, channels=(8, 8), num_residual_blocks=0),
        quantizer=VectorQuantizer(16, 8),
        discriminator=PatchDiscriminator(filters=4, num_layers=2),
        perceptual_loss=_perceptual_loss(),
        adversarial_weight=0.5,
        lecam_weight=0.5,
    )
    logs = _compiled(model).fit(blob_images(8), batch_size=8, epochs=1, verbose=0).history
    # The discriminator's terms reach the discriminator, not the autoencoder.
    assert logs["d_term_at_decoder"] == [0.0]
    assert logs["d_term_at_discriminator"][0] > 0
    # The generator's weight: adversarial_weight * ||grad L_rec|| / (||grad L_gen|| + 1e-4).
    generator, reconstruction = logs["g_term_at_decoder"][0], logs["reconstruction_at_decoder"][0]
    assert generator > 0 and reconstruction > 0
    expected = 0.5 * min(reconstruction / (generator + 1e-4), 1e4)
    np.testing.assert_allclose(logs["adaptive_weight"][0], expected, rtol=1e-5)


def test_the_deprecated_discriminator_weight_still_loads_as_adversarial_weight():
    config = _json(small_vqgan(perceptual=False, adversarial_weight=0.3).get_config())
    assert config["adversarial_weight"] == 0.3 and "discriminator_weight" not in config
    old = dict(config)
    old["discriminator_weight"] = old.pop("adversarial_weight")
    with pytest.warns(DeprecationWarning, match="use `adversarial_weight`"):
        clone = VQGAN.from_config(old)
    assert clone.adversarial_weight == 0.3 and _json(clone.get_config()) == config
    with pytest.raises(ValueError, match="discriminator_weight=0.3 and adversarial_weight=0.3"):
        small_vqgan(perceptual=False, adversarial_weight=0.3, discriminator_weight=0.3)


def test_the_adaptive_weight_is_measured_at_the_decoders_output_kernel():
    model = small_vqgan()
    model.build((None, 16, 16, 1))
    assert model.last_decoder_kernel is model.decoder.output_conv.kernel


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    images = blob_images(8)
    model = _compiled(small_vqgan(lecam_weight=0.1, discriminator_start=1))
    model.fit(images, batch_size=8, epochs=2, verbose=0)
    model.save(tmp_path / "vqgan.keras")
    loaded = keras.saving.load_model(tmp_path / "vqgan.keras")
    assert isinstance(loaded, VQGAN)
    assert _json(loaded.get_config()) == _json(model.get_config())
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    np.testing.assert_array_equal(
        to_numpy(loaded.encode_indices(images)), to_numpy(model.encode_indices(images))
    )
    for name in ("train_steps", "lecam_ema_real", "lecam_ema_fake"):
        assert to_numpy(getattr(loaded, name)) == to_numpy(getattr(model, name)), name
    x, y = images[:2] / 255.0, images[2:4] / 255.0
    np.testing.assert_array_equal(
        to_numpy(loaded.perceptual_loss(x, y)), to_numpy(model.perceptual_loss(x, y))
    )
    for got, want in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def test_as_vqvae_is_the_inference_model_without_the_discriminator(tmp_path):
    images = blob_images(4)
    model = small_vqgan()
    model.build(images.shape)
    vqvae = model.as_vqvae()
    assert type(vqvae) is VQVAE and vqvae.encoder is model.encoder
    assert vqvae.code_grids() == model.code_grids()
    np.testing.assert_array_equal(
        vqvae.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    # A VQGAN's own preset is that VQVAE, under the VQGAN's name.
    model.save_to_preset(tmp_path / "preset")
    loaded = vqkeras.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is VQVAE and not hasattr(loaded, "discriminator")
    assert loaded.name == model.name
    np.testing.assert_allclose(
        to_numpy(loaded.decode_indices(model.encode_indices(images))),
        to_numpy(model.decode_indices(model.encode_indices(images))),
        rtol=1e-6,
    )


def test_a_preset_with_the_training_parts_loads_as_the_vqgan(tmp_path):
    images = blob_images(8)
    model = _compiled(small_vqgan(discriminator_start=1))
    model.fit(images, batch_size=8, epochs=2, verbose=0)
    model.save_to_preset(tmp_path / "preset", training_parts=True)
    loaded = vqkeras.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is VQGAN and not loaded.compiled
    assert int(to_numpy(loaded.train_steps)) == 2
    for got, want in zip(loaded.discriminator.weights, model.discriminator.weights):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
    x, y = images[:2] / 255.0, images[2:4] / 255.0
    np.testing.assert_array_equal(
        to_numpy(loaded.perceptual_loss(x, y)), to_numpy(model.perceptual_loss(x, y))
    )


def test_pixel_loss_is_l1_or_l2_on_the_unit_scale():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    reconstruction = rng.uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    for pixel_loss, expected in (
        ("l1", np.abs(images - reconstruction).mean(axis=(1, 2, 3))),
        ("l2", np.square(images - reconstruction).mean(axis=(1, 2, 3))),
    ):
        model = small_vqgan(perceptual=False, pixel_loss=pixel_loss)
        got = to_numpy(
            model.reconstruction_loss(images, keras.ops.convert_to_tensor(reconstruction))
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=pixel_loss)


def test_loss_terms_follow_the_options():
    assert small_vqgan(perceptual=False).loss_names == (
        "reconstruction_loss",
        "codebook_loss",
        "commitment_loss",
        "generator_loss",
        "discriminator_loss",
    )
    groups = small_vqgan(lecam_weight=0.1).optimizer_groups
    assert [(g.name, g.loss_names, g.layers) for g in groups] == [
        (
            "generator",
            (
                "reconstruction_loss",
                "codebook_loss",
                "commitment_loss",
                "perceptual_loss",
                "generator_loss",
            ),
            None,
        ),
        ("discriminator", ("discriminator_loss", "lecam_loss"), ("discriminator",)),
    ]


def test_bad_arguments_get_clear_errors():
    parts = {
        "encoder": ConvEncoder(8, channels=(8, 8)),
        "decoder": ConvDecoder(1, channels=(8, 8)),
        "quantizer": VectorQuantizer(16, 8),
    }
    discriminator = PatchDiscriminator(filters=4, num_layers=2)
    with pytest.raises(TypeError, match=r"`discriminator` must be a Keras layer.*Received: None"):
        VQGAN(**parts, discriminator=None)
    with pytest.raises(TypeError, match=r"`perceptual_loss` must be.*PerceptualLoss or None"):
        VQGAN(**parts, discriminator=discriminator, perceptual_loss="lpips")
    for option, value, message in (
        (
            "pixel_loss",
            "l3",
            r"`pixel_loss` must be one of \['l1', 'l2'\]. Received: pixel_loss='l3'",
        ),
        ("adversarial_loss", "wgan", r"\['hinge', 'non_saturating'\]. Received: adversarial_loss"),
        ("adversarial_weight", -1.0, r"`adversarial_weight` must be in \[0.0, inf\)"),
        ("discriminator_start", 2.5, r"`discriminator_start` must be a non-negative integer"),
        ("lecam_weight", float("nan"), r"`lecam_weight` must be in"),
        ("lecam_decay", 1.0, r"`lecam_decay` must be in \[0.0, 1.0\). Received: lecam_decay=1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            VQGAN(**parts, discriminator=discriminator, **{option: value})
    with pytest.raises(TypeError, match=r"optimizer, \['discriminator_optimizer'\]"):
        small_vqgan().compile(optimizer="adam", critic_optimizer="adam")


@pytest.mark.slow
def test_mixed_float16_trains_with_float32_loss_terms():
    keras.config.set_dtype_policy("mixed_float16")
    images = blob_images(8)
    model = _compiled(small_vqgan(lecam_weight=0.1))
    terms, outputs = model.compute_losses(images, training=False)
    assert all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in terms.values())
    assert keras.backend.standardize_dtype(outputs["real_logits"].dtype) == "float32"
    history = model.fit(images, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["adaptive_weight"][-1] > 0


@pytest.mark.parametrize("adversarial_loss", ["hinge", "non_saturating"])
def test_loss_terms_are_the_losses_of_the_outputs(adversarial_loss):
    images = blob_images(4)
    model = small_vqgan(adversarial_loss=adversarial_loss, perceptual_weight=0.3, lecam_weight=0.2)
    terms, outputs = model.compute_losses(images, training=False)
    terms = {name: float(to_numpy(value)) for name, value in terms.items()}
    real, fake = to_numpy(outputs["real_logits"]), to_numpy(outputs["stopped_fake_logits"])
    np.testing.assert_allclose(fake, to_numpy(outputs["fake_logits"]), rtol=1e-6)
    assert real.shape == fake.shape == (4, 4, 4, 1)
    if adversarial_loss == "hinge":
        d_loss = np.mean(np.maximum(1 - real, 0)) + np.mean(np.maximum(1 + fake, 0))
        g_loss = -np.mean(fake)
    else:
        softplus = lambda x: np.logaddexp(0.0, x)  # noqa: E731
        d_loss = np.mean(softplus(-real)) + np.mean(softplus(fake))
        g_loss = np.mean(softplus(-fake))
    # Not trained yet: LeCAM's moving averages are 0.
    lecam = 0.2 * (np.mean(real**2) + np.mean(fake**2))
    perceptual = 0.3 * np.mean(to_numpy(outputs["perceptual_distance"]))
    for name, expected in (
        ("discriminator_loss", d_loss),
        ("generator_loss", g_loss),
        ("lecam_loss", lecam),
        ("perceptual_loss", perceptual),
    ):
        np.testing.assert_allclose(terms[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)
    # An inference pass neither counts a step nor moves the averages.
    assert int(to_numpy(model.train_steps)) == 0
    assert float(to_numpy(model.lecam_ema_real)) == 0.0
