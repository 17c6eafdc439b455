import numpy as np
import pytest
from conftest import blob_images, options_of, to_numpy

from vqkeras.evaluation import evaluate_reconstructions
from vqkeras.families import FAMILIES, families_of_kind
from vqkeras.layers import (
    EMAVectorQuantizer,
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    PatchDiscriminator,
)
from vqkeras.models import (
    KLVAE,
    RQVAE,
    VAE,
    VQGAN,
    VQVAE,
    VQVAE2,
    AdversarialKLVAE,
    Autoencoder,
)
from vqkeras.models.factory import build_autoencoder, fsq_levels, lfq_bits

AUTOENCODERS = families_of_kind("autoencoder")

CLASSES = {
    "ae": Autoencoder,
    "vae": VAE,
    "klvae": KLVAE,
    "vqvae": VQVAE,
    "ema-vqvae": VQVAE,
    "rqvae": RQVAE,
    "vqvae2": VQVAE2,
    "fsq-vae": VQVAE,
    "lfq-vae": VQVAE,
    "gumbel-vae": VQVAE,
    "vqgan": VQGAN,
    "adversarial-klvae": AdversarialKLVAE,
}


@pytest.mark.parametrize("family", AUTOENCODERS)
def test_each_family_is_built_and_measured(family):
    images = blob_images(8, channels=3)
    model = build_autoencoder(
        family,
        (16, 16, 3),
        channels=(8, 16),
        **options_of(family, num_embeddings=16, latent_dim=4, depth=2),
    )
    assert type(model) is CLASSES[family] and model.built and model.name == family.replace("-", "_")
    # (Training every family is the family contract's job: tests/test_family_contract.py.)
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
    elif family in ("vqvae", "ema-vqvae", "lfq-vae", "gumbel-vae", "vqgan"):
        assert metrics["bits_per_image"] == 4 * 4 * 4.0
    elif family == "fsq-vae":  # levels (3, 5): 15 codes
        np.testing.assert_allclose(metrics["bits_per_image"], 4 * 4 * np.log2(15))
    else:
        assert "bits_per_image" not in metrics


def test_latent_dim_defaults_and_vae_encoders_output_mean_and_log_variance():
    assert build_autoencoder("ema-vqvae", (8, 8, 1), channels=(4,)).quantizer.embedding_dim == 64
    assert build_autoencoder("klvae", (8, 8, 1), channels=(4,)).encoder.latent_dim == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"family": "gan"}, r"Unknown autoencoder family 'gan'. Expected one of: ae, vae"),
        ({"family": "pixelcnn-prior"}, r"Unknown autoencoder family 'pixelcnn-prior'"),
        ({"architecture": "unet"}, r"Unknown architecture 'unet'. Expected one of: conv"),
        ({"channels": (8, 0)}, r"`channels` must be a positive integer. Received: channels=0"),
        (
            {"num_embeddings": 16},
            r"Neither family 'ae' nor architecture 'conv' has the option 'num_embeddings'. "
            r"The family's options: latent_dim; the architecture's: channels, ",
        ),
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


def test_the_registry_holds_the_families_in_order_with_their_defaults():
    assert AUTOENCODERS == (
        "ae",
        "vae",
        "klvae",
        "vqvae",
        "ema-vqvae",
        "rqvae",
        "vqvae2",
        "fsq-vae",
        "lfq-vae",
        "gumbel-vae",
        "vqgan",
        "adversarial-klvae",
    )
    assert {name: FAMILIES[name].Options().latent_dim for name in AUTOENCODERS} == {
        "ae": 4,
        "vae": 4,
        "klvae": 4,
        "vqvae": 64,
        "ema-vqvae": 64,
        "rqvae": 64,
        "vqvae2": 64,
        "fsq-vae": 4,
        "lfq-vae": 9,
        "gumbel-vae": 64,
        "vqgan": 64,
        "adversarial-klvae": 4,
    }
    assert [name for name in AUTOENCODERS if FAMILIES[name].extra_downsampling] == ["vqvae2"]


def test_a_registered_family_is_built_with_its_defaults(tiny_family):
    assert tiny_family in FAMILIES and list(FAMILIES)[-1] == tiny_family
    model = build_autoencoder(tiny_family, (16, 16, 1), channels=(4,))
    assert type(model) is Autoencoder and model.built and model.name == "tiny_ae"
    assert model.encoder.latent_dim == 3
    assert to_numpy(model.encode(blob_images(2))).shape == (2, 4, 4, 3)
    assert to_numpy(model.predict(blob_images(2), verbose=0)).shape == (2, 16, 16, 1)
    # Its extra halving counts in the image-size check.
    with pytest.raises(ValueError, match=r"multiples of 4. Received: image_shape=\(10, 10, 1\)"):
        build_autoencoder(tiny_family, (10, 10, 1), channels=(4,))


@pytest.mark.parametrize(
    "num_embeddings, levels",
    [(2, (2,)), (9, (9,)), (10, (2, 5)), (16, (3, 5)), (512, (4, 5, 5, 5)), (1024, (8, 5, 5, 5))],
)
def test_fsq_levels_give_at_most_the_codes_asked_for(num_embeddings, levels):
    assert fsq_levels(num_embeddings) == levels
    assert np.prod(levels) <= num_embeddings


def test_scalar_and_lookup_free_families_take_their_codes_from_num_embeddings():
    fsq = build_autoencoder("fsq-vae", (8, 8, 1), channels=(4,), num_embeddings=1024)
    assert type(fsq.quantizer) is FiniteScalarQuantizer
    assert fsq.quantizer.levels == (8, 5, 5, 5) and not fsq.quantizer.projected
    fsq = build_autoencoder("fsq-vae", (8, 8, 1), channels=(4,), latent_dim=6, levels=(4, 4))
    assert fsq.quantizer.levels == (4, 4) and fsq.quantizer.projected
    assert fsq.code_grids()[0].num_embeddings == 16
    lfq = build_autoencoder("lfq-vae", (8, 8, 1), channels=(4,))
    assert type(lfq.quantizer) is LookupFreeQuantizer and lfq.quantizer.bits == 9
    assert not lfq.quantizer.projected
    assert [lfq_bits(k) for k in (2, 3, 16, 100, 512)] == [1, 1, 4, 6, 9]
    gumbel = build_autoencoder("gumbel-vae", (8, 8, 1), channels=(4,), num_embeddings=32)
    assert type(gumbel.quantizer) is GumbelQuantizer and gumbel.quantizer.straight_through
    assert gumbel.quantizer.num_embeddings == 32
    with pytest.raises(ValueError, match="at least 2 codes. Received: num_embeddings=1"):
        build_autoencoder("fsq-vae", (8, 8, 1), channels=(4,), num_embeddings=1)
    with pytest.raises(ValueError, match="at least 2 codes. Received: num_embeddings=1"):
        build_autoencoder("lfq-vae", (8, 8, 1), channels=(4,), num_embeddings=1)
    with pytest.raises(ValueError, match=r"Every level must be an integer >= 2.*\(4, 1\)"):
        build_autoencoder("fsq-vae", (8, 8, 1), channels=(4,), levels=(4, 1))


def test_the_adversarial_families_have_a_discriminator_as_deep_as_their_encoder():
    model = build_autoencoder(
        "vqgan",
        (16, 16, 3),
        channels=(8, 16),
        num_embeddings=32,
        discriminator_start=100,
        adversarial_weight=0.5,
    )
    assert type(model.quantizer) is EMAVectorQuantizer and model.quantizer.num_embeddings == 32
    assert type(model.discriminator) is PatchDiscriminator
    assert (model.discriminator.filters, model.discriminator.num_layers) == (8, 2)
    assert (model.discriminator_start, model.adversarial_weight) == (100, 0.5)
    assert model.perceptual_loss is None and "perceptual_loss" not in model.loss_names
    # One logit per latent position.
    logits = model.discriminator(np.zeros((2, 16, 16, 3), "float32"))
    assert to_numpy(logits).shape == (2, 4, 4, 1)
    klvae = build_autoencoder(
        "adversarial-klvae", (16, 16, 3), channels=(8,), kl_weight=1e-4, discriminator_start=7
    )
    assert (klvae.latent_dim, klvae.kl_weight, klvae.discriminator_start) == (4, 1e-4, 7)
    assert (klvae.discriminator.filters, klvae.discriminator.num_layers) == (8, 1)


CODEBOOK_OPTIONS = {
    "code_dim": 8,
    "normalize_codes": True,
    "kmeans_init": True,
    "gradient_estimator": "rotation",
}


@pytest.mark.parametrize("family", ["vqvae", "ema-vqvae", "vqgan", "vqvae2"])
def test_the_codebook_options_reach_every_codebook(family):
    model = build_autoencoder(
        family, (16, 16, 1), channels=(4, 8), num_embeddings=16, latent_dim=4, **CODEBOOK_OPTIONS
    )
    quantizers = (
        [model.bottom_quantizer, model.top_quantizer] if family == "vqvae2" else [model.quantizer]
    )
    for quantizer in quantizers:
        config = quantizer.get_config()
        assert {name: config[name] for name in CODEBOOK_OPTIONS} == CODEBOOK_OPTIONS
        assert quantizer.projected and quantizer.code_size == 8
    # The codes are 8 wide, the latent grid 4: projections in and out.
    images = blob_images(4)
    assert to_numpy(model.predict(images, verbose=0)).shape == (4, 16, 16, 1)


def test_without_codebook_options_the_codebooks_keep_the_layer_defaults():
    quantizer = build_autoencoder("vqvae", (8, 8, 1), channels=(4,), latent_dim=4).quantizer
    config = quantizer.get_config()
    assert (config["code_dim"], config["normalize_codes"], config["kmeans_init"]) == (
        None,
        False,
        False,
    )
    assert config["gradient_estimator"] == "straight_through" and not quantizer.projected


def test_rqvae_takes_kmeans_init_on_every_level_and_no_other_codebook_option():
    model = build_autoencoder(
        "rqvae", (8, 8, 1), channels=(4,), latent_dim=4, depth=2, kmeans_init=True
    )
    assert [level.kmeans_init for level in model.quantizer.level_quantizers] == [True, True]
    with pytest.raises(
        ValueError,
        match=r"Neither family 'rqvae' nor architecture 'conv' has the option "
        r"'gradient_estimator', 'normalize_codes'\. The family's options: latent_dim, "
        r"num_embeddings, commitment_cost, depth, kmeans_init;",
    ):
        build_autoencoder(
            "rqvae",
            (8, 8, 1),
            channels=(4,),
            normalize_codes=True,
            kmeans_init=True,
            gradient_estimator="rotation",
        )


@pytest.mark.parametrize("family", ["ae", "klvae", "fsq-vae", "lfq-vae", "gumbel-vae"])
def test_families_without_codebooks_refuse_the_codebook_options(family):
    with pytest.raises(
        ValueError,
        match=rf"Neither family '{family}' nor architecture 'conv' has the option 'code_dim', "
        r"'kmeans_init'\.",
    ):
        build_autoencoder(family, (8, 8, 1), channels=(4,), code_dim=8, kmeans_init=True)


def test_the_commitment_cost_reaches_every_codebook():
    rqvae = build_autoencoder("rqvae", (8, 8, 1), channels=(4,), depth=2, commitment_cost=0.5)
    assert [level.commitment_cost for level in rqvae.quantizer.level_quantizers] == [0.5, 0.5]
    vqvae2 = build_autoencoder("vqvae2", (8, 8, 1), channels=(4,), commitment_cost=0.1)
    assert vqvae2.top_quantizer.commitment_cost == vqvae2.bottom_quantizer.commitment_cost == 0.1
