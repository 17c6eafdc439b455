"""The family registry: options dataclasses, their command-line flags, the
registry's checks, the architecture registry, what a family does besides
building, and the rule that no module outside the families names one."""

import argparse
import ast
import dataclasses
import pathlib

import keras
import numpy as np
import pytest
from conftest import blob_images

from vqkeras.callbacks import GumbelTemperatureSchedule
from vqkeras.codes import CodeGrid
from vqkeras.families import (
    ARCHITECTURES,
    FAMILIES,
    families_of_kind,
    get_architecture,
    get_family,
    register_family,
)
from vqkeras.families.autoencoders import AutoencoderFamily, KLOptions
from vqkeras.families.options import add_arguments, options_from_args
from vqkeras.models import MaskGITPrior, PixelCNNPrior
from vqkeras.models.factory import build_autoencoder

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_options_have_defaults_checks_and_json_values():
    options = FAMILIES["fsq-vae"].options({"levels": [8, 5, 5, 5]})
    assert options.levels == (8, 5, 5, 5) and options.latent_dim == 4
    assert options.as_dict() == {"latent_dim": 4, "num_embeddings": 512, "levels": [8, 5, 5, 5]}
    assert FAMILIES["vae"].Options().kl_weight == 1.0
    assert FAMILIES["klvae"].Options().kl_weight == 1e-6
    with pytest.raises(ValueError, match=r"`kl_weight` must be in \[0.0, inf\). Received: kl_"):
        FAMILIES["klvae"].options({"kl_weight": -1.0})
    with pytest.raises(
        ValueError,
        match=r"The family 'klvae' has no option 'depth', 'levels'. "
        r"Its options: latent_dim, kl_weight\.",
    ):
        FAMILIES["klvae"].options({"levels": (4,), "depth": 2})
    with pytest.raises(ValueError, match="`gradient_estimator` must be one of 'straight_through'"):
        FAMILIES["vqvae"].options({"gradient_estimator": "identity"})
    with pytest.raises(ValueError, match=r"`temperatures` must be \(start, end\)"):
        FAMILIES["gumbel-vae"].options({"temperatures": (1.0,)})
    with pytest.raises(ValueError, match="without perceptual_features"):
        FAMILIES["vqgan"].options({"perceptual_weight": 0.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.latent_dim = 8


def test_flags_are_generated_from_the_options_and_read_back():
    parser = argparse.ArgumentParser()
    add_arguments(parser, FAMILIES["vqgan"].Options, "family", title="vqgan")
    args = parser.parse_args(
        ["--num-embeddings", "32", "--normalize-codes", "--perceptual-features", "c"]
    )
    # Only what was given: the rest keeps the dataclass defaults.
    given = options_from_args(args, "family")
    assert given == {"num_embeddings": 32, "normalize_codes": True, "perceptual_features": "c"}
    options = FAMILIES["vqgan"].options(given)
    assert (options.num_embeddings, options.latent_dim, options.adversarial_weight) == (32, 64, 0.8)
    args = parser.parse_args(["--no-normalize-codes", "--gradient-estimator", "rotation"])
    assert options_from_args(args, "family") == {
        "normalize_codes": False,
        "gradient_estimator": "rotation",
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--gradient-estimator", "identity"])


def test_the_registry_checks_what_it_registers():
    with pytest.raises(ValueError, match="'ae' is already registered"):
        register_family("ae")(type("Again", (AutoencoderFamily,), {}))
    with pytest.raises(ValueError, match=r"must subclass a family kind \(autoencoder, prior\)"):

        @register_family("kindless")
        class Kindless:
            kind = "pipeline"

    with pytest.raises(ValueError, match="non-empty string"):
        register_family("")
    assert "kindless" not in FAMILIES
    with pytest.raises(ValueError, match="Unknown prior family 'vqvae'. Expected one of: pixelcnn"):
        get_family("vqvae", kind="prior")
    assert families_of_kind("prior") == ("pixelcnn-prior", "transformer-prior", "maskgit-prior")
    with pytest.raises(TypeError):
        FAMILIES["mine"] = FAMILIES["ae"]  # read-only: families come in by register_family
    assert FAMILIES["ema-vqvae"].summary.startswith("`VQVAE` with an EMA codebook")


def test_architectures_are_a_registry_of_their_own():
    assert tuple(ARCHITECTURES) == ("conv", "ldm")
    with pytest.raises(ValueError, match="Unknown architecture 'unet'. Expected one of: conv, ldm"):
        get_architecture("unet")
    conv = get_architecture("conv")(get_architecture("conv").Options(channels=(8, 16, 32)))
    assert conv.downsampling == 8 and conv.width == 32
    assert (conv.discriminator().filters, conv.discriminator().num_layers) == (8, 3)
    # No option is both a family's and an architecture's: build_autoencoder
    # tells them apart by name.
    for architecture in ARCHITECTURES.values():
        architecture_names = set(architecture.Options.names())
        for name in families_of_kind("autoencoder"):
            assert not architecture_names & set(FAMILIES[name].Options.names()), name


def test_gumbel_resolves_its_anneal_and_brings_its_schedule():
    family = FAMILIES["gumbel-vae"]
    options = family.resolve(family.options({"temperatures": (2.0, 0.5)}), epochs=3)
    assert options.anneal_epochs == 3
    assert family.resolve(options, epochs=10).anneal_epochs == 3  # recorded, kept
    (schedule,) = family.callbacks(options, steps_per_epoch=4)
    assert isinstance(schedule, GumbelTemperatureSchedule) and schedule.decay_steps == 12
    assert (schedule.initial_temperature, schedule.final_temperature) == (2.0, 0.5)
    assert FAMILIES["ema-vqvae"].callbacks(options, steps_per_epoch=4) == []


def test_the_adversarial_families_name_their_discriminators_learning_rate():
    for name in ("vqgan", "adversarial-klvae"):
        family = FAMILIES[name]
        assert family.group_learning_rates(family.Options()) == {}
        options = family.options({"discriminator_learning_rate": 2e-4})
        (group,) = family.group_learning_rates(options)
        model = build_autoencoder(name, (8, 8, 1), channels=(4,))
        # The name is one of the model's own optimizer groups.
        assert group in [g.name for g in model.optimizer_groups[1:]]
    assert FAMILIES["klvae"].group_learning_rates(KLOptions()) == {}


def test_the_kl_families_measure_and_store_their_scaling_factor():
    images = blob_images(16)
    for name in ("klvae", "adversarial-klvae"):
        keras.utils.set_random_seed(0)
        model = build_autoencoder(name, (16, 16, 1), channels=(4,))
        measured = FAMILIES[name].after_training(model, images, seed=3)
        expected = model.compute_scaling_factor(images, seed=3)
        np.testing.assert_allclose(measured["scaling_factor"], expected, rtol=1e-5)
        assert model.scaling_factor == measured["scaling_factor"] != 1.0
        # The inference model that the preset holds carries it.
        if hasattr(model, "as_inference_model"):
            assert model.as_inference_model().scaling_factor == model.scaling_factor
    assert FAMILIES["ema-vqvae"].after_training(None, images, seed=0) == {}


def _vqvae2_grids():
    return (CodeGrid("top", (2, 2), 16), CodeGrid("bottom", (4, 4), 32, conditioned_on="top"))


def test_a_prior_family_picks_its_grid_and_depth():
    family = FAMILIES["pixelcnn-prior"]
    single = (CodeGrid("indices", (4, 4, 3), 16),)
    grid, condition = family.modelled_grids(single, family.Options())
    assert (grid, condition) == (single[0], None)
    grid, _ = family.modelled_grids(single, family.options({"depth": 2}))
    assert grid.shape == (4, 4, 2) and grid.depth == 2
    codes = {"indices": np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)}
    np.testing.assert_array_equal(family.inputs(codes, grid, None), codes["indices"][..., :2])
    with pytest.raises(ValueError, match=r"`depth` 4 needs stacked codes of at least that many"):
        family.modelled_grids(single, family.options({"depth": 4}))
    with pytest.raises(ValueError, match=r"has the code grids \['top', 'bottom'\]: choose"):
        family.modelled_grids(_vqvae2_grids(), family.Options())
    with pytest.raises(ValueError, match=r"no code grid 'middle'. Its grids: \['top', 'bottom'\]"):
        family.modelled_grids(_vqvae2_grids(), family.options({"grid": "middle"}))
    with pytest.raises(ValueError, match="the autoencoder has none: expected a VQ model"):
        family.modelled_grids((), family.Options())
    grid, condition = family.modelled_grids(_vqvae2_grids(), family.options({"grid": "bottom"}))
    assert (grid.name, condition.name) == ("bottom", "top")
    pair = family.inputs(
        {"top": np.zeros((2, 2, 2)), "bottom": np.ones((2, 4, 4))}, grid, condition
    )
    assert [part.shape for part in pair] == [(2, 4, 4), (2, 2, 2)]


def test_prior_families_build_their_prior_for_the_grid():
    family = FAMILIES["pixelcnn-prior"]
    options = family.options({"filters": 8, "num_blocks": 1, "grid": "bottom"})
    grid, condition = family.modelled_grids(_vqvae2_grids(), options)
    prior = family.build(
        grid, options, condition=condition, num_classes=3, image_shape=(16, 16, 1), name="p"
    )
    assert type(prior) is PixelCNNPrior and prior.built and prior.name == "p"
    assert (prior.num_embeddings, prior.grid_shape, prior.num_classes) == (32, (4, 4), 3)
    assert prior.fits(grid, condition) and prior.image_size == (16, 16, 1)
    assert (prior.filters, prior.num_blocks, prior.kernel_size) == (8, 1, 5)
    maskgit = FAMILIES["maskgit-prior"]
    options = maskgit.options({"embed_dim": 8, "num_heads": 2, "num_layers": 1})
    prior = maskgit.build(
        CodeGrid("indices", (4, 4), 16), options, image_shape=(16, 16, 1), name="m"
    )
    # Its loss is no likelihood: no image size for bits/dim.
    assert type(prior) is MaskGITPrior and prior.num_classes is None and prior.image_size is None


def _string_values(tree):
    """The string constants of a module that are values: not docstrings, nor
    keys (of dicts, subscripts, `.get`), such as the metadata key "vqvae"."""
    skipped = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skipped.add(id(body[0].value))
        if isinstance(node, ast.Dict):
            skipped.update(id(key) for key in node.keys if key is not None)
        if isinstance(node, ast.Subscript):
            skipped.add(id(node.slice))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "pop"):
            skipped.update(id(arg) for arg in node.args[:1])
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
    ]


def test_no_module_outside_the_families_names_a_family_or_an_optimizer_group():
    """Family knowledge lives in the registry (vqkeras/families/) and the
    family's own model classes (vqkeras/models/): the apps, the pipeline and
    the recipes' shared code read it from there."""
    groups = set()
    for name in families_of_kind("autoencoder"):
        model = build_autoencoder(name, (8, 8, 1), channels=(4,))
        named_groups = [group.name for group in model.optimizer_groups]
        # One group is every model's default, named for the whole model.
        groups.update(named_groups if len(named_groups) > 1 else ())
    names = set(FAMILIES) | groups
    checked = [
        *ROOT.glob("apps/*.py"),
        *ROOT.glob("vqkeras/*.py"),
        *(ROOT / "zoo" / name for name in ("autoencoder_recipe.py", "prior_recipe.py")),
        ROOT / "zoo" / "recipe_options.py",
    ]
    assert len(checked) > 20
    named = {
        path.relative_to(ROOT).as_posix(): sorted(
            names & set(_string_values(ast.parse(path.read_text())))
        )
        for path in checked
    }
    assert {path: found for path, found in named.items() if found} == {}
