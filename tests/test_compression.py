import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae, to_numpy

from vqkeras import compressed_file, prior_coding, samples
from vqkeras.apps.cli import main
from vqkeras.compression import Codec, decompress, read_header
from vqkeras.models import MaskGITPrior, PixelCNNPrior, TransformerPrior
from vqkeras.models.factory import build_autoencoder


def tiny_prior(num_classes=3, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    prior = PixelCNNPrior(
        16, (4, 4), num_classes=num_classes, filters=8, num_blocks=2, embedding_dim=4, **kwargs
    )
    prior.build()
    return prior


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("presets")
    vqvae = small_vqvae()  # 16x16 images to 4x4 grids of K=16 codes
    vqvae.build((None, 16, 16, 1))
    vqvae.save_to_preset(folder / "vqvae")
    tiny_prior().save_to_preset(folder / "prior")
    tiny_prior(seed=1).save_to_preset(folder / "other_prior")
    tiny_prior(num_classes=None).save_to_preset(folder / "unconditional")
    # An RQ-VAE with 3 levels, and priors over its first 2 and all 3 levels.
    sizes = {"latent_dim": 4, "channels": (8, 8), "num_embeddings": 16}
    build_autoencoder("rqvae", (16, 16, 1), depth=3, **sizes).save_to_preset(folder / "rqvae")
    tiny_prior(num_classes=None, depth=2).save_to_preset(folder / "depth2_prior")
    tiny_prior(num_classes=None, depth=3).save_to_preset(folder / "depth3_prior")
    sizes = {"embed_dim": 8, "num_heads": 2, "num_layers": 1}
    for name, kind, arguments in (
        ("transformer", TransformerPrior, {"num_classes": 3}),
        ("transformer_depth2", TransformerPrior, {"depth": 2}),
        ("maskgit", MaskGITPrior, {"num_classes": 3}),
    ):
        keras.utils.set_random_seed(2)
        prior = kind(16, (4, 4), **sizes, **arguments)
        prior.build()
        prior.save_to_preset(folder / name)
    return {path.name: str(path) for path in folder.iterdir()}


# Two batches of 8, the second partial: the fewest that exercise batching
# (JAX runs the prior eagerly, one position at a time).
IMAGES = blob_images(11)
LABELS = np.arange(11) % 3


@pytest.fixture(scope="module")
def conditional(presets):
    codec = Codec(presets["vqvae"], presets["prior"])
    return codec, codec.compress(IMAGES, LABELS, batch_size=8)


def prior_nll_bits(prior, codes, labels):
    """-sum log2 p of `codes` under the prior's float softmax."""
    inputs = codes if labels is None else (codes, labels)
    logits = to_numpy(prior(inputs)).astype(np.float64)
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_p -= logits.max(-1, keepdims=True)
    picked = np.take_along_axis(log_p, codes[..., None], axis=-1)
    return float(-picked.sum() / np.log(2))


def test_decompress_gives_exactly_the_codes_of_encode_indices(presets, conditional):
    codec, compressed = conditional
    expected = to_numpy(codec.model.encode_indices(IMAGES))
    np.testing.assert_array_equal(compressed.codes, expected)
    restored = decompress(compressed.data)
    np.testing.assert_array_equal(restored.codes, expected)
    np.testing.assert_array_equal(restored.labels, LABELS)
    decoded = np.clip(to_numpy(codec.model.decode_indices(expected)), 0, 1)
    np.testing.assert_array_equal(restored.images, decoded)
    assert restored.header.count == 11 and restored.header.image_shape == [16, 16, 1]


def test_the_logits_of_encoding_and_decoding_are_bit_identical(presets):
    prior = Codec(presets["vqvae"], presets["prior"]).prior
    codes = np.random.default_rng(0).integers(0, 16, size=(5, 4, 4)).astype("int32")
    labels = np.array([0, 1, 2, 0, 1], dtype="int32")
    steps = prior_coding.PriorSteps(prior)
    seen = []
    flat = codes.reshape(5, -1)

    def teacher(logits):
        seen.append(logits)
        return flat[:, len(seen) - 1]

    np.testing.assert_array_equal(steps.decode(5, labels, teacher), codes)
    incremental = np.stack(seen, axis=1).reshape(5, 4, 4, 1, 16)
    assert np.array_equal(steps.all_logits(codes, labels), incremental)
    # The steps compute the prior's own distribution: its forward pass over
    # whole grids (other matrix shapes, so equal up to the last bits).
    full = to_numpy(prior((codes, labels)))
    np.testing.assert_allclose(incremental, np.reshape(full, incremental.shape), atol=1e-5)


def test_coded_size_is_within_one_percent_of_the_prior_nll(presets, conditional):
    codec, compressed = conditional
    header = read_header(compressed.data)
    labels_bits = 11 * np.log2(3)
    nll = prior_nll_bits(codec.prior, compressed.codes, LABELS) + labels_bits
    payload_bits = header.payload_bytes * 8
    # The range coder's flush adds at most two 32-bit words.
    assert payload_bits <= 1.01 * nll + 64
    assert compressed.nll_bits == pytest.approx(nll, rel=0.01)
    # The header: fixed prefix and a JSON object of a few hundred bytes.
    assert len(compressed.data) - header.payload_bytes < 700


def test_unconditional_prior_and_rate_control_by_depth(presets):
    codec = Codec(presets["vqvae"], presets["unconditional"])
    compressed = codec.compress(IMAGES[:5])
    np.testing.assert_array_equal(decompress(compressed.data).codes, compressed.codes)
    full = to_numpy(Codec(presets["rqvae"], presets["depth3_prior"]).model.encode_indices(IMAGES))
    sizes = {}
    for depth in (2, 3):
        codec = Codec(presets["rqvae"], presets[f"depth{depth}_prior"], depth=depth)
        compressed = codec.compress(IMAGES, batch_size=16)
        restored = decompress(compressed.data)
        np.testing.assert_array_equal(restored.codes, full[..., :depth])
        decoded = np.clip(to_numpy(codec.model.decode_indices(full[..., :depth])), 0, 1)
        np.testing.assert_array_equal(restored.images, decoded)
        sizes[depth] = len(compressed.data)
    assert sizes[2] < sizes[3]
    with pytest.raises(ValueError, match="depth=3 needs a prior over the first 3 levels"):
        Codec(presets["rqvae"], presets["depth2_prior"], depth=3)
    with pytest.raises(ValueError, match="do not fit"):
        Codec(presets["rqvae"], presets["prior"])


@pytest.mark.slow
def test_shipped_mnist_presets_round_trip():
    images, labels = samples.load("mnist")
    codec = Codec("vqvae_mnist", "pixelcnn_vqvae_mnist")
    labels = labels[:6] if codec.prior.conditional else None
    compressed = codec.compress(images[:6], labels)
    np.testing.assert_array_equal(
        decompress(compressed.data).codes, to_numpy(codec.model.encode_indices(images[:6]))
    )


def repacked(data, **changes):
    header, payload = compressed_file.unpack(data)
    return compressed_file.pack(dataclasses.replace(header, **changes), payload)


def test_damaged_and_foreign_files_get_clear_errors(presets, conditional):
    codec, compressed = conditional
    data = compressed.data
    payload_start = len(data) - read_header(data).payload_bytes
    flipped = bytearray(data)
    flipped[payload_start + 3] ^= 0x10
    header_flipped = bytearray(data)
    header_flipped[20] ^= 0x01
    cases = {
        "truncated: its header says": data[:-5],
        "longer than it should be": data + b"\0",
        r"coded codes fail their CRC32": bytes(flipped),
        "header fails its CRC32": bytes(header_flipped),
        "truncated or corrupted": data[:30],
        "not a vqkeras compressed file": b"PNG" + data[3:],
        "format version 2; this vqkeras reads version 3": data[:4] + b"\x02" + data[5:],
        "compressed on the nope backend": repacked(data, backend="nope"),
    }
    for message, damaged in cases.items():
        with pytest.raises(ValueError, match=message):
            codec.decompress(damaged)
    with pytest.raises(ValueError, match="other weights cannot decode it"):
        decompress(data, prior=presets["other_prior"])


def test_wrong_images_and_labels_are_refused(presets):
    codec = Codec(presets["vqvae"], presets["prior"])
    with pytest.raises(ValueError, match=r"images of shape \(N, 16, 16, 1\)"):
        codec.compress(blob_images(2, size=20), [0, 1])
    with pytest.raises(ValueError, match="labels are required"):
        codec.compress(IMAGES[:2])
    with pytest.raises(ValueError, match=r"labels"):
        codec.compress(IMAGES[:2], [0, 7])


def cli(*argv):
    return main([str(value) for value in (*argv, "--quiet")])


def test_cli_round_trip_overwrite_and_image_handling(presets, tmp_path, capsys):
    inputs = tmp_path / "images.npz"
    np.savez(inputs, x_test=IMAGES, y_test=LABELS)
    out = tmp_path / "codes.vqkc"
    base = ["compress", "--model", presets["vqvae"], "--prior", presets["prior"]]
    assert cli(*base, "--input", inputs, "--out", out) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 11 and summary["bytes"] == os.path.getsize(out)
    assert sorted(os.listdir(tmp_path)) == ["codes.vqkc", "images.npz"]  # no temporary files
    before = out.read_bytes()
    assert cli(*base, "--input", inputs, "--label", 1, "--out", out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli("decompress", out, "--out", tmp_path / "restored") == 0
    capsys.readouterr()
    with np.load(tmp_path / "restored" / "images.npz") as restored:
        np.testing.assert_array_equal(restored["labels"], LABELS)
        assert restored["images"].shape == (11, 16, 16, 1)
    assert cli("decompress", out, "--out", tmp_path / "restored") == 2
    assert "already exists" in capsys.readouterr().err
    # RGB images of another size: the prior codes one grid size, so they are
    # refused with a hint, unless --size resizes them (converted as by the
    # other apps, or refused with --strict).
    other = tmp_path / "rgb.npz"
    np.savez(other, x_test=blob_images(3, size=20, channels=3), y_test=[0, 1, 2])
    assert cli(*base, "--input", other, "--out", tmp_path / "rgb.vqkc") == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the grayscale notice
    assert error.startswith("vqkeras: error: ") and "takes 16x16 images only" in error
    assert "image 0 of the input is 20x20. Pass --size 16x16 to resize the images" in error
    assert cli(*base, "--input", other, "--size", "16x20", "--out", tmp_path / "rgb.vqkc") == 2
    assert "Received --size 16x20" in capsys.readouterr().err
    assert cli(*base, "--input", other, "--size", "16x16", "--out", tmp_path / "rgb.vqkc") == 0
    assert "resized 3 image(s)" in capsys.readouterr().err
    strict = ["--size", "16x16", "--strict", "--out", tmp_path / "strict.vqkc"]
    assert cli(*base, "--input", other, *strict) == 2
    assert not (tmp_path / "strict.vqkc").exists()
    capsys.readouterr()
    out.write_bytes(before[:-3])
    assert cli("decompress", out, "--out", tmp_path / "broken") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is truncated" in error


def test_transformer_priors_code_with_the_steps_of_decoding(presets):
    codec = Codec(presets["vqvae"], presets["transformer"])
    compressed = codec.compress(IMAGES, LABELS, batch_size=8)
    restored = decompress(compressed.data)
    np.testing.assert_array_equal(restored.codes, to_numpy(codec.model.encode_indices(IMAGES)))
    np.testing.assert_array_equal(restored.labels, LABELS)
    # The coded size is the NLL of the full forward pass, up to the tables' quantization.
    nll = prior_nll_bits(codec.prior, compressed.codes, LABELS) + 11 * np.log2(3)
    assert read_header(compressed.data).payload_bytes * 8 <= 1.01 * nll + 64
    # Stacked codes: the first 2 levels of the RQ-VAE, flattened coarse to fine.
    codec = Codec(presets["rqvae"], presets["transformer_depth2"], depth=2)
    compressed = codec.compress(IMAGES[:5])
    np.testing.assert_array_equal(decompress(compressed.data).codes, compressed.codes)
    assert compressed.codes.shape == (5, 4, 4, 2)
    with pytest.raises(ValueError, match="MaskGITPrior gives no code-by-code probabilities"):
        Codec(presets["vqvae"], presets["maskgit"])
