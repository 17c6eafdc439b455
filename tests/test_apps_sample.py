import json

import numpy as np
import pytest
from conftest import small_vqvae, to_numpy
from PIL import Image

from vqkeras.apps.cli import main
from vqkeras.apps.images import to_uint8
from vqkeras.models import MaskGITPrior, PixelCNNPrior, TransformerPrior
from vqkeras.models.factory import build_autoencoder
from vqkeras.presets import from_preset


def tiny_prior(num_embeddings=16, grid_shape=(4, 4), num_classes=3, **kwargs):
    prior = PixelCNNPrior(
        num_embeddings,
        grid_shape,
        num_classes=num_classes,
        filters=8,
        num_blocks=2,
        embedding_dim=4,
        **kwargs,
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
    tiny_prior(num_classes=None).save_to_preset(folder / "unconditional")
    tiny_prior(num_embeddings=8, grid_shape=(7, 7)).save_to_preset(folder / "other_prior")
    # An RQ-VAE (4x4 grids of 2 stacked codes) and a VQ-VAE-2 (2x2 over 4x4) with their priors.
    sizes = {"latent_dim": 4, "channels": (8, 8), "num_embeddings": 16}
    build_autoencoder("rqvae", (16, 16, 1), depth=2, **sizes).save_to_preset(folder / "rqvae")
    tiny_prior(depth=2).save_to_preset(folder / "depth_prior")
    build_autoencoder("vqvae2", (32, 32, 1), **sizes).save_to_preset(folder / "vqvae2")
    tiny_prior(grid_shape=(4, 4)).save_to_preset(folder / "top_prior")
    tiny_prior(
        grid_shape=(8, 8), condition_num_embeddings=16, condition_grid_shape=(4, 4)
    ).save_to_preset(folder / "bottom_prior")
    tiny_prior(grid_shape=(8, 8)).save_to_preset(folder / "plain_bottom")
    sizes = {"num_classes": 3, "embed_dim": 8, "num_heads": 2, "num_layers": 1}
    for name, kind in (("transformer", TransformerPrior), ("maskgit", MaskGITPrior)):
        prior = kind(16, (4, 4), **sizes)
        prior.build()
        prior.save_to_preset(folder / name)
    return {path.name: str(path) for path in folder.iterdir()}


def sample(presets, out, *extra, prior="prior"):
    argv = ["sample", "--model", presets["vqvae"], "--prior", presets[prior], "--out", str(out)]
    # A later --model replaces the first; "PRIOR" stands for the prior's folder.
    extra = [presets["prior"] if value == "PRIOR" else str(value) for value in extra]
    return main([*argv, "--quiet", *extra])


def test_sample_writes_codes_and_their_decoded_images(presets, tmp_path, capsys):
    assert sample(presets, tmp_path / "a", "--num", 5, "--seed", 7) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_counts"] == {"0": 2, "1": 2, "2": 1}
    with np.load(tmp_path / "a" / "codes.npz", allow_pickle=False) as data:
        codes, labels = data["indices"], data["labels"]
        assert str(data["model"]) == presets["vqvae"] and str(data["prior"]) == presets["prior"]
    assert codes.shape == (5, 4, 4) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 16
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
    # With the default labels, one column per class: 2 rows of 3 tiles.
    picture = np.asarray(Image.open(tmp_path / "a" / "samples.png"))
    decoded = to_uint8(to_numpy(from_preset(presets["vqvae"]).decode_indices(codes)))
    tile = decoded[0, ..., 0]
    np.testing.assert_array_equal(picture[2:66:4, 2:66:4], tile)
    assert picture.shape == (2 * 66 + 2, 3 * 66 + 2)

    # The same seed (and batch size) gives the same codes.
    assert sample(presets, tmp_path / "a", "--num", 5, "--seed", 7, "--overwrite") == 0
    with np.load(tmp_path / "a" / "codes.npz") as data:
        np.testing.assert_array_equal(data["indices"], codes)
    capsys.readouterr()


def test_label_temperature_top_k_and_batches(presets, tmp_path, capsys):
    argv = ["--num", 3, "--label", 2, "--top-k", 1, "--temperature", 0.5, "--batch-size", 2]
    assert sample(presets, tmp_path, *argv) == 0
    with np.load(tmp_path / "codes.npz") as data:
        np.testing.assert_array_equal(data["labels"], [2, 2, 2])
        codes = data["indices"]
    # top_k=1 draws the most likely code everywhere: every sample is the same.
    prior = from_preset(presets["prior"])
    expected = to_numpy(prior.sample(1, labels=np.array([2]), top_k=1, seed=0))
    np.testing.assert_array_equal(codes, np.repeat(expected, 3, axis=0))
    assert json.loads(capsys.readouterr().out)["label_counts"] == {"2": 3}


@pytest.mark.parametrize(
    "prior, extra, message",
    [
        ("prior", ["--label", 3], r"--label must be in [0, 3) for prior"),
        ("unconditional", ["--label", 0], "is unconditional (no classes)"),
        ("other_prior", [], "samples 7x7 grids of K=8 codes but model"),
        ("vqvae", [], "holds a VQVAE, expected a CodePrior"),
        ("prior", ["--temperature", 0], "`temperature` must be in (0.0, inf)"),
        ("prior", ["--model", "PRIOR"], "holds a PixelCNNPrior: expected an autoencoder"),
        (
            "prior",
            ["--guidance-scale", 2],
            "--guidance-scale is not an option of PixelCNNPrior",
        ),
        ("transformer", ["--num-steps", 4], "it takes --temperature, --top-k, --top-p, --guid"),
        ("unconditional", ["--top-p", 1.5], "`top_p` must be in (0.0, 1.0]"),
    ],
)
def test_bad_arguments_get_one_line_errors(presets, tmp_path, capsys, prior, extra, message):
    assert sample(presets, tmp_path, "--num", 2, *extra, prior=prior) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("vqkeras: error: ") and err.count("\n") == 1
    if prior == "other_prior":
        assert presets[prior] in err and presets["vqvae"] in err and "4x4 grids of K=16" in err
    assert not (tmp_path / "codes.npz").exists()


def test_rqvae_and_vqvae2_are_sampled_with_their_priors(presets, tmp_path, capsys):
    argv = ["sample", "--quiet", "--num", 3, "--seed", 1, "--out"]
    argv += [tmp_path / "rq", "--model", presets["rqvae"], "--prior", presets["depth_prior"]]
    assert main([str(value) for value in argv]) == 0
    with np.load(tmp_path / "rq" / "codes.npz") as data:
        assert data["indices"].shape == (3, 4, 4, 2) and data["indices"].max() < 16
    argv = ["sample", "--quiet", "--num", 3, "--seed", 1, "--batch-size", 2, "--out"]
    argv += [tmp_path / "vq2", "--model", presets["vqvae2"], "--prior", presets["top_prior"]]
    argv += ["--bottom-prior", presets["bottom_prior"]]
    assert main([str(value) for value in argv]) == 0
    with np.load(tmp_path / "vq2" / "codes.npz") as data:
        top, bottom, labels = data["top"], data["bottom"], data["labels"]
    assert top.shape == (3, 4, 4) and bottom.shape == (3, 8, 8)
    # The bottom codes are those the bottom prior draws given the top ones
    # (second batch: seed 1 + 1, and the bottom prior's seed 3 past it).
    bottom_prior = from_preset(presets["bottom_prior"])
    expected = bottom_prior.sample(1, labels=labels[2:], condition=top[2:], seed=2 + 3)
    np.testing.assert_array_equal(bottom[2:], to_numpy(expected))
    summaries = capsys.readouterr().out
    assert presets["bottom_prior"] in summaries


@pytest.mark.parametrize(
    "model, priors, message",
    [
        ("vqvae2", ["top_prior"], "give --prior for the top grid and --bottom-prior"),
        ("vqvae2", ["top_prior", "top_prior"], "decodes 8x8 grids of K=16 codes"),
        ("vqvae2", ["top_prior", "plain_bottom"], "needs 4x4 grids of K=16 codes for model"),
        ("vqvae2", ["bottom_prior", "bottom_prior"], "samples 8x8 grids of K=16 codes"),
        ("vqvae", ["prior", "bottom_prior"], "--bottom-prior is for a VQVAE2's two levels"),
        ("rqvae", ["prior"], "samples 4x4 grids of K=16 codes but model"),
    ],
)
def test_priors_that_do_not_fit_the_levels_get_one_line_errors(
    presets, tmp_path, capsys, model, priors, message
):
    argv = ["sample", "--num", 2, "--out", tmp_path, "--model", presets[model]]
    argv += ["--prior", presets[priors[0]]]
    if len(priors) == 2:
        argv += ["--bottom-prior", presets[priors[1]]]
    assert main([str(value) for value in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "prior, extra, options",
    [
        (
            "transformer",
            ["--guidance-scale", 2, "--top-p", 0.9],
            {"guidance_scale": 2.0, "top_p": 0.9},
        ),
        ("maskgit", ["--num-steps", 3, "--top-k", 4], {"num_steps": 3, "top_k": 4}),
        ("prior", ["--top-p", 0.5], {"top_p": 0.5}),
    ],
)
def test_any_prior_kind_samples_with_its_own_options(
    presets, tmp_path, capsys, prior, extra, options
):
    assert sample(presets, tmp_path, "--num", 3, "--seed", 4, *extra, prior=prior) == 0
    assert json.loads(capsys.readouterr().out)["options"] == {"temperature": 1.0, **options}
    with np.load(tmp_path / "codes.npz") as data:
        codes, labels = data["indices"], data["labels"]
    # The codes are those the prior draws with the same options and seed.
    expected = from_preset(presets[prior]).sample(3, labels=labels, seed=4, **options)
    np.testing.assert_array_equal(codes, to_numpy(expected))
