import json
import os

import h5py
import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy

import vqkeras
from vqkeras import presets
from vqkeras.evaluation import (
    conditional_sample_agreement,
    encode_indices,
    evaluate_prior,
    evaluate_reconstructions,
)
from vqkeras.file_io import current_umask
from vqkeras.models import VQVAE


@pytest.fixture
def saved_preset(tmp_path):
    images = blob_images(16)
    model = small_vqvae(restart_after_steps=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)
    directory = model.save_to_preset(tmp_path / "tiny", metadata={"dataset": "blobs"})
    return model, images, directory


def test_round_trip_and_metadata(saved_preset):
    model, images, directory = saved_preset
    assert sorted(os.listdir(directory)) == ["config.json", "metadata.json", "model.weights.h5"]
    assert os.stat(directory).st_mode & 0o777 == 0o777 & ~current_umask()
    loaded = vqkeras.from_preset(directory)
    assert isinstance(loaded, VQVAE)
    assert not loaded.compiled  # a preset holds the model, not how it was trained
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    np.testing.assert_array_equal(
        to_numpy(loaded.encode_indices(images)), to_numpy(model.encode_indices(images))
    )
    metadata = presets.load_metadata(directory)
    assert metadata["dataset"] == "blobs"
    assert metadata["class_name"] == "VQVAE"
    assert metadata["num_embeddings"] == 16
    assert metadata["input_shape"] == [16, 16, 1]
    assert metadata["latent_shape"] == [4, 4, 8]
    assert metadata["parameter_count"] == model.count_params()
    assert metadata["weights_sha256"] == presets.sha256_of(
        os.path.join(directory, "model.weights.h5")
    )
    assert VQVAE.from_preset(directory).count_params() == model.count_params()
    # The model was compiled and trained; the preset leaves its optimizer state out.
    with h5py.File(os.path.join(directory, "model.weights.h5")) as weights:
        assert "optimizer" not in weights


def test_a_training_runs_folder_stands_for_its_preset(saved_preset, tmp_path):
    model, images, _ = saved_preset
    model.save_to_preset(tmp_path / "run" / presets.PRESET_DIR)
    loaded = vqkeras.from_preset(tmp_path / "run")
    assert presets.load_metadata(tmp_path / "run")["class_name"] == "VQVAE"
    np.testing.assert_array_equal(
        to_numpy(loaded.encode_indices(images)), to_numpy(model.encode_indices(images))
    )
    with pytest.raises(ValueError, match="neither a shipped preset nor a folder"):
        vqkeras.from_preset(tmp_path / "run" / "missing")


def test_existing_preset_is_not_clobbered(saved_preset):
    model, _, directory = saved_preset
    before = presets.sha256_of(os.path.join(directory, "model.weights.h5"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_to_preset(directory)
    assert presets.sha256_of(os.path.join(directory, "model.weights.h5")) == before
    model.save_to_preset(directory, overwrite=True)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_weights_fail_clearly(saved_preset, damage):
    _, _, directory = saved_preset
    weights = os.path.join(directory, "model.weights.h5")
    data = bytearray(open(weights, "rb").read())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    open(weights, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 .* expected .*nothing was loaded"):
        vqkeras.from_preset(directory)


def test_remote_weights_are_fetched_verified_and_cached(saved_preset, tmp_path):
    model, images, directory = saved_preset
    # A preset that names its weights by URL; a file:// URL keeps the test offline.
    remote = tmp_path / "remote"
    remote.mkdir()
    os.replace(os.path.join(directory, "model.weights.h5"), remote / "w.h5")
    metadata_path = os.path.join(directory, "metadata.json")
    metadata = json.load(open(metadata_path))
    metadata["weights_url"] = (remote / "w.h5").as_uri()
    json.dump(metadata, open(metadata_path, "w"))
    loaded = vqkeras.from_preset(directory, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    cached = os.listdir(tmp_path / "cache" / "vqkeras")
    assert len(cached) == 1 and cached[0].endswith(".weights.h5")


def test_unknown_preset_names_close_matches(monkeypatch):
    monkeypatch.setattr(vqkeras.zoo, "list", lambda: ["vqvae_mnist", "vqvae_cifar10"])
    with pytest.raises(
        ValueError, match=r"Unknown preset 'vqvae_mnst'.*Did you mean 'vqvae_mnist'"
    ):
        vqkeras.from_preset("vqvae_mnst")


def test_wrong_class_and_unbuilt_model(saved_preset, tmp_path):
    _, _, directory = saved_preset
    with pytest.raises(TypeError, match="holds a VQVAE, expected a Sequential"):
        presets.from_preset(directory, expected_class=keras.Sequential)
    with pytest.raises(ValueError, match="unbuilt model"):
        small_vqvae().save_to_preset(tmp_path / "unbuilt")


def sample_check_value(model, check):
    """Recomputes the figure a shipped preset's `sample_check` records."""
    if "agreement" in check:
        return conditional_sample_agreement(
            model,
            vqkeras.from_preset(check["vqvae"]),
            vqkeras.from_preset(check["classifier"]),
            samples_per_class=check["samples_per_class"],
            seed=check["seed"],
        )["agreement"]
    images, labels = vqkeras.samples.load(check["sample"])
    if "psnr_db" in check:
        return evaluate_reconstructions(model, images)["psnr_db"]
    if "nll_nats_per_code" in check:
        codes = encode_indices(vqkeras.from_preset(check["vqvae"]), images)
        if model.depth is not None:  # a prior over the first levels of an RQ-VAE's codes
            codes = codes[..., : model.depth]
        return evaluate_prior(model, codes, labels)["nll_nats_per_code"]
    predictions = model.predict(images / 255.0, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == labels))


@pytest.mark.parametrize("name", vqkeras.zoo.list())
def test_shipped_preset_loads_and_passes_its_sample_check(name):
    metadata = vqkeras.zoo.info(name)
    weights = os.path.join(vqkeras.zoo.preset_dir(name), "model.weights.h5")
    assert presets.sha256_of(weights) == metadata["weights_sha256"]
    model = vqkeras.from_preset(name)
    assert model.count_params() == metadata["parameter_count"]
    check = metadata["sample_check"]
    value = sample_check_value(model, check)
    if "psnr_db" in check:
        assert value >= check["psnr_floor_db"], f"{name}: {value:.2f} dB"
        np.testing.assert_allclose(value, check["psnr_db"], atol=0.05)
    elif "agreement" in check:
        # Other backends draw other samples: a floor only.
        assert value >= check["agreement_floor"], f"{name}: agreement {value:.3f}"
    elif "nll_nats_per_code" in check:
        assert value <= check["nll_ceiling_nats_per_code"], f"{name}: {value:.4f} nats/code"
        np.testing.assert_allclose(value, check["nll_nats_per_code"], atol=0.01)
    else:
        assert value >= check["accuracy_floor"], f"{name}: accuracy {value:.4f}"
        np.testing.assert_allclose(value, check["accuracy"], atol=0.01)


def _is_autoencoder(name):
    from vqkeras.models.autoencoder_model import AutoencoderModel

    class_name = vqkeras.zoo.info(name)["class_name"]
    cls = keras.saving.get_registered_object(f"vqkeras>{class_name}")
    return isinstance(cls, type) and issubclass(cls, AutoencoderModel)


@pytest.mark.parametrize("name", [name for name in vqkeras.zoo.list() if _is_autoencoder(name)])
def test_autoencoder_cards_give_the_trained_size_and_say_other_sizes_work(name):
    height, width, _ = vqkeras.zoo.info(name)["input_shape"]
    with open(os.path.join(vqkeras.zoo.preset_dir(name), "README.md")) as f:
        card = f.read()
    section = card.split("## Other image sizes\n", 1)[-1].split("\n## ", 1)[0]
    assert "## Other image sizes" in card, name
    text = " ".join(section.split())
    assert f"Trained at {height}x{width} pixels" in text and "each at its own size" in text, name
