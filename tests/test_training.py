import csv
import json
import math

import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae

import vqkeras
from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.models.factory import build_autoencoder
from vqkeras.training import (
    compile_with_cosine_adam,
    completed_epochs,
    fit_resumable,
    is_resuming,
    load_initial_weights,
    load_npz_splits,
    train_and_evaluate,
)


def compiled_vqvae():
    model = small_vqvae()
    model.build((None, 16, 16, 1))
    model.compile(optimizer="adam")
    return model


def logged_epochs(out):
    with open(out / "training_log.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_an_interrupted_run_resumes_and_a_finished_run_trains_no_further(tmp_path):
    images = blob_images(16)
    kwargs = {"batch_size": 8, "validation_data": (images[:8],), "verbose": 0}
    fit_resumable(compiled_vqvae(), images, tmp_path, epochs=1, **kwargs)
    assert is_resuming(tmp_path) and logged_epochs(tmp_path) == [0]
    assert (tmp_path / "checkpoints" / "epoch_001.weights.h5").exists()

    # The same command with more epochs: continues from epoch 2.
    resumed = compiled_vqvae()
    history, timer = fit_resumable(resumed, images, tmp_path, epochs=2, **kwargs)
    assert history.epoch == [1]
    assert logged_epochs(tmp_path) == [0, 1] and completed_epochs(tmp_path) == 2
    assert sorted(json.loads((tmp_path / "timing.json").read_text())["epochs"]) == ["1", "2"]
    assert timer.summary()["epochs"] == 2

    # Rerun once finished: restores the final weights and trains no further.
    rerun = compiled_vqvae()
    history, _ = fit_resumable(rerun, images, tmp_path, epochs=2, **kwargs)
    assert history.epoch == []
    for a, b in zip(resumed.weights, rerun.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_resumed_vqgan_run_restores_both_optimizers_and_its_step_count(tmp_path):
    images = blob_images(16)

    def compiled_vqgan():
        model = build_autoencoder("vqgan", (16, 16, 1), channels=(4, 4), latent_dim=4)
        compile_with_cosine_adam(model, decay_steps=10)
        return model

    fit_resumable(compiled_vqgan(), images, tmp_path, epochs=1, batch_size=8, verbose=0)
    resumed = compiled_vqgan()
    fit_resumable(resumed, images, tmp_path, epochs=2, batch_size=8, verbose=0)
    # Two epochs of two steps: 2, not 4, had the second session started afresh.
    optimizers = resumed.optimizer.group_optimizers
    assert {name: int(o.iterations.numpy()) for name, o in optimizers.items()} == {
        "generator": 4,
        "discriminator": 4,
    }
    assert int(keras.ops.convert_to_numpy(resumed.train_steps)) == 4
    # Each optimizer's cosine decay follows its own restored step: 4 of 10.
    decayed = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 10)))
    for optimizer in optimizers.values():
        learning_rate = keras.ops.convert_to_numpy(optimizer.learning_rate)
        np.testing.assert_allclose(learning_rate, decayed, rtol=1e-5)


def test_fit_resumable_needs_a_built_compiled_model(tmp_path):
    with pytest.raises(ValueError, match="built and compiled"):
        fit_resumable(small_vqvae(), blob_images(4), tmp_path, epochs=1, batch_size=4)


def test_load_npz_splits(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(10 * 4 * 4, dtype="uint8").reshape(10, 4, 4)
    np.savez(path, x_train=x, y_train=np.arange(10).reshape(10, 1), x_test=x[:3], y_test=[1, 2, 3])
    data = load_npz_splits(path, (4, 4, 1), validation_size=4, limit_train=5)
    assert data["x_train"].shape == (5, 4, 4, 1) and data["x_val"].shape == (4, 4, 4, 1)
    np.testing.assert_array_equal(data["y_val"], [6, 7, 8, 9])
    assert data["y_test"].dtype == np.int32
    with pytest.raises(ValueError, match=r"expected x_train as uint8 of shape \(N, 8, 8, 1\)"):
        load_npz_splits(path, (8, 8, 1), validation_size=4)
    with pytest.raises(ValueError, match="more than 10 images"):
        load_npz_splits(path, (4, 4, 1), validation_size=10)
    np.savez(path, images=x)
    with pytest.raises(ValueError, match=r"Missing: \['x_test', 'x_train'"):
        load_npz_splits(path, (4, 4, 1), validation_size=4)


def learning_rate_at(model, step):
    model.optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_compile_with_cosine_adam_decays_along_a_cosine_to_the_final_fraction():
    model = small_vqvae()
    model.build((None, 16, 16, 1))
    compile_with_cosine_adam(model, 100, learning_rate=2e-3, final_fraction=0.05)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    for step in (0, 25, 50, 100, 150):
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, 100) / 100))
        expected = 2e-3 * (0.05 + 0.95 * cosine)
        np.testing.assert_allclose(learning_rate_at(model, step), expected, rtol=1e-5)
    # The defaults: from 1e-3 down to a tenth of it.
    compile_with_cosine_adam(model, 10)
    np.testing.assert_allclose(learning_rate_at(model, 0), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(learning_rate_at(model, 10), 1e-4, rtol=1e-5)


def test_compile_with_cosine_adam_gives_a_discriminator_its_own_learning_rate():
    model = build_autoencoder("vqgan", (16, 16, 1), latent_dim=4, channels=(4, 8), num_embeddings=8)
    compile_with_cosine_adam(
        model,
        100,
        learning_rate=1e-3,
        betas=(0.5, 0.9),
        group_learning_rates={"discriminator": 4e-4},
    )
    generator, discriminator = model.optimizer.optimizers
    for optimizer, rate in ((generator, 1e-3), (discriminator, 4e-4)):
        assert (optimizer.beta_1, optimizer.beta_2) == (0.5, 0.9)
        optimizer.iterations.assign(50)
        halfway = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        np.testing.assert_allclose(halfway, rate * (0.1 + 0.9 * 0.5), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decay_steps": 0}, "decay_steps"),
        ({"learning_rate": 0.0}, r"learning_rate` must be in \(0.0, inf\)"),
        ({"final_fraction": 1.5}, r"final_fraction` must be in \[0.0, 1.0\]"),
        ({"betas": (0.9,)}, r"`betas` must be a pair \(beta_1, beta_2\). Received: betas=\(0.9,\)"),
        ({"betas": (0.9, 1.0)}, r"beta_2` must be in \[0.0, 1.0\)"),
        (
            {"group_learning_rates": {"discriminator": 1e-4}},
            r"learning rate was given for the optimizer group 'discriminator', but VQVAE "
            r"'vqvae' has the groups \['model'\], the first taking `learning_rate`",
        ),
    ],
)
def test_compile_with_cosine_adam_checks_its_arguments(kwargs, match):
    arguments = {"decay_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        compile_with_cosine_adam(small_vqvae(), arguments.pop("decay_steps"), **arguments)


def train_small_vqvae(out, report, **kwargs):
    """`train_and_evaluate` of a small VQ-VAE on 10 blob images in batches of 4."""
    images = blob_images(10)
    seeded = []

    def build():
        # What numpy draws first tells that the seed was set just before.
        seeded.append(np.random.random() == np.random.RandomState(7).random_sample())
        model = small_vqvae()
        model.build((None, 16, 16, 1))
        return model

    run = train_and_evaluate(
        build,
        images,
        out,
        batch_size=4,
        seed=7,
        evaluate=lambda model: evaluate_reconstructions(model, images),
        report=report,
        validation_data=(images[:4],),
        verbose=0,
        **kwargs,
    )
    assert seeded == [True]
    return run


def report(run):
    return {"epochs": len(run.timer.epochs), "test": run.evaluation}, {"dataset": "blobs"}


def test_train_and_evaluate_writes_the_run_and_the_preset_and_resumes(tmp_path):
    run = train_small_vqvae(tmp_path, report, epochs=1, schedule_epochs=2)
    # 3 steps of the 2 * ceil(10 / 4) = 6 of the schedule: halfway down its cosine.
    assert int(run.model.optimizer.iterations) == 3
    expected = 1e-3 * (0.1 + 0.9 * 0.5)
    np.testing.assert_allclose(float(run.model.optimizer.learning_rate), expected, rtol=1e-5)
    assert run.history.epoch == [0] and run.evaluation["images"] == 10
    for name in ("training_log.csv", "timing.json", "checkpoints/epoch_001.weights.h5"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == run.metrics == {"epochs": 1, "test": run.evaluation}
    preset = vqkeras.from_preset(tmp_path / "preset")
    for a, b in zip(preset.weights, run.model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    card = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert card["dataset"] == "blobs"

    # The same call with more epochs continues the run and replaces its own files.
    resumed = train_small_vqvae(tmp_path, report, epochs=2, schedule_epochs=2)
    assert resumed.history.epoch == [1] and completed_epochs(tmp_path) == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


def test_train_and_evaluate_refuses_a_preset_it_did_not_write(tmp_path):
    small = small_vqvae()
    small.build((None, 16, 16, 1))
    small.save_to_preset(tmp_path / "preset")
    with pytest.raises(FileExistsError, match="no earlier run in .* wrote it"):
        train_small_vqvae(tmp_path, report, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset"]  # nothing trained


def test_train_and_evaluate_without_a_report_writes_only_the_training_files(tmp_path):
    run = train_small_vqvae(tmp_path, None, epochs=1)
    assert run.metrics is None and np.isfinite(run.evaluation["psnr_db"])
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "preset").exists()
    assert completed_epochs(tmp_path) == 1


def test_train_and_evaluate_takes_labels_a_warm_start_and_an_after_training_step(tmp_path):
    # A classifier: targets, compile arguments, a constant learning rate.
    images = blob_images(12).astype("float32") / 255.0
    labels = np.arange(12) % 3

    def build():
        return keras.Sequential(
            [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(3)],
            name="tiny_classifier",
        )

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    measured = []
    run = train_and_evaluate(
        build,
        images,
        tmp_path / "first",
        y=labels,
        epochs=2,
        batch_size=4,
        seed=0,
        evaluate=lambda model: model.evaluate(images, labels, verbose=0, return_dict=True),
        report=lambda run: ({"loss": run.evaluation["loss"]}, {}),
        after_training=lambda model: measured.append(model.name) or {"seen": 12},
        final_fraction=1.0,
        compile_kwargs={"loss": loss, "metrics": ["accuracy"]},
        verbose=0,
    )
    assert measured == ["tiny_classifier"] and run.measured == {"seen": 12}
    assert float(run.model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert run.history.history["loss"][1] < run.history.history["loss"][0]
    # Saved whole, as a preset, and a warm start from it begins where it ended.
    start = train_and_evaluate(
        build,
        images,
        tmp_path / "second",
        y=labels,
        epochs=1,
        batch_size=4,
        seed=1,
        evaluate=lambda model: model.evaluate(images, labels, verbose=0, return_dict=True),
        init_from=str(tmp_path / "first" / "preset"),
        learning_rate=1e-12,
        compile_kwargs={"loss": loss},
        verbose=0,
    )
    np.testing.assert_allclose(start.evaluation["loss"], run.evaluation["loss"], rtol=1e-4)


def test_a_warm_start_needs_the_same_architecture(tmp_path):
    small = small_vqvae()
    small.build((None, 16, 16, 1))
    small.save_to_preset(tmp_path / "vqvae")
    # A VQGAN starts from a VQ-VAE preset of its inference model's architecture.
    gan = build_autoencoder("vqgan", (16, 16, 1), latent_dim=4, channels=(8, 16), num_embeddings=16)
    other = build_autoencoder("ema-vqvae", (16, 16, 1), latent_dim=4, channels=(8,))
    with pytest.raises(ValueError, match=r"their architectures differ in \['decoder', 'encoder'"):
        load_initial_weights(other, tmp_path / "vqvae")
    with pytest.raises(ValueError, match="the preset holds a VQVAE, expected a KLVAE"):
        load_initial_weights(
            build_autoencoder("klvae", (16, 16, 1), channels=(8,)), tmp_path / "vqvae"
        )
    source = build_autoencoder(
        "ema-vqvae", (16, 16, 1), latent_dim=4, channels=(8, 16), num_embeddings=16
    )
    source.save_to_preset(tmp_path / "ema")
    load_initial_weights(gan, tmp_path / "ema")
    for a, b in zip(gan.as_inference_model().weights, source.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
