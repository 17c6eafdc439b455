"""The options that `VectorQuantizer` and `EMAVectorQuantizer` share through
`BaseVectorQuantizer`: factorized and l2-normalised codes, k-means
initialisation and the rotation trick, each checked on both classes."""

import keras
import numpy as np
import pytest
from conftest import (
    assert_weights_load_on_other_backends,
    blob_images,
    gradients,
    small_vqvae,
    to_numpy,
)

from vqkeras.layers import EMAVectorQuantizer, VectorQuantizer

CLASSES = {"vector": VectorQuantizer, "ema": EMAVectorQuantizer}


@pytest.fixture(params=sorted(CLASSES))
def cls(request):
    return CLASSES[request.param]


def built(cls, codebook, embedding_dim=None, **kwargs):
    """A built quantizer of `cls` whose stored codebook is `codebook` (K, C)."""
    num_embeddings, code_size = codebook.shape
    embedding_dim = embedding_dim or code_size
    layer = cls(num_embeddings, embedding_dim, **kwargs)
    layer.build((None, embedding_dim))
    if cls is VectorQuantizer:
        layer.embeddings.assign(codebook)
    else:
        layer.embedding_sum.assign(codebook)  # cluster sizes start at 1
    return layer


def normalized(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def nearest(flat, codebook):
    return ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(1)


def rotation_gradient(z, q, upstream):
    """The rotation trick's gradient with respect to z, from its formula
    (Fifty et al. 2024): (||q|| / ||z||) R^T upstream per vector, with
    R = I - 2 r r^T + 2 q^ z^T and r = (z^ + q^) / ||z^ + q^||."""
    grads = []
    for z_i, q_i, g_i in zip(z, q, upstream):
        z_hat, q_hat = normalized(z_i), normalized(q_i)
        r = normalized(z_hat + q_hat)
        rotation = np.eye(len(z_i)) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, z_hat)
        scale = np.linalg.norm(q_i) / np.linalg.norm(z_i)
        np.testing.assert_allclose(scale * rotation @ z_i, q_i, rtol=1e-10, atol=1e-10)
        grads.append(scale * rotation.T @ g_i)
    return np.stack(grads)


def test_factorized_normalized_codes_match_numpy(cls):
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(16, 3)).astype("float32")
    layer = built(
        cls, codebook, embedding_dim=6, code_dim=3, normalize_codes=True, commitment_cost=0.5
    )
    x = rng.normal(size=(2, 3, 5, 6)).astype("float32")
    out = layer(x)

    w_in, b_in = (to_numpy(w) for w in layer.project_in.weights)
    w_out, b_out = (to_numpy(w) for w in layer.project_out.weights)
    z = normalized(x.reshape(-1, 6).astype("float64") @ w_in + b_in)
    codes = normalized(codebook.astype("float64"))
    indices = nearest(z, codes)
    np.testing.assert_array_equal(to_numpy(out["indices"]), indices.reshape(2, 3, 5))
    expected = (codes[indices] @ w_out + b_out).reshape(x.shape)
    np.testing.assert_allclose(to_numpy(out["quantized"]), expected, rtol=1e-5, atol=1e-5)
    # Loss terms live in the code space, between unit vectors.
    squared = ((z - codes[indices]) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(to_numpy(out["commitment_loss"]), 0.5 * squared, rtol=1e-4)
    if cls is VectorQuantizer:
        np.testing.assert_allclose(to_numpy(out["codebook_loss"]), squared, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(to_numpy(layer.codebook), axis=1), 1.0, rtol=1e-6)
    # Decoding the indices gives the quantized output to the last bit.
    np.testing.assert_array_equal(
        to_numpy(layer.indices_to_codes(out["indices"])), to_numpy(out["quantized"])
    )
    np.testing.assert_array_equal(to_numpy(layer.nearest_indices(x)), to_numpy(out["indices"]))


def test_code_dim_equal_to_the_input_width_adds_no_projection(cls):
    layer = cls(16, 4, code_dim=4)
    layer.build((None, 4))
    assert not layer.projected
    assert not any("project" in w.path for w in layer.weights)


def test_factorized_codes_under_mixed_bfloat16_choose_as_float32(cls):
    rng = np.random.default_rng(1)
    codebook = rng.normal(size=(64, 2)).astype("float32")
    reference = built(cls, codebook, embedding_dim=8, code_dim=2, normalize_codes=True)
    mixed = built(
        cls, codebook, embedding_dim=8, code_dim=2, normalize_codes=True, dtype="mixed_bfloat16"
    )
    mixed.set_weights(reference.get_weights())
    x = rng.normal(size=(256, 8)).astype("float32")
    expected = to_numpy(reference(x)["indices"])
    out = mixed(x)
    np.testing.assert_array_equal(to_numpy(out["indices"]), expected)
    assert keras.backend.standardize_dtype(out["quantized"].dtype) == "bfloat16"
    assert {keras.backend.standardize_dtype(w.dtype) for w in mixed.weights} == {"float32"}


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_rotation_trick_gradient_matches_its_formula(cls, shape):
    rng = np.random.default_rng(2)
    codebook = rng.normal(size=(8, 4)).astype("float32")
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    rotation = built(cls, codebook, gradient_estimator="rotation")
    straight = built(cls, codebook)

    out = rotation(x)
    # The forward value is the code, exactly as the straight-through output.
    np.testing.assert_array_equal(to_numpy(out["quantized"]), to_numpy(straight(x)["quantized"]))
    np.testing.assert_array_equal(to_numpy(out["quantized"]), codebook[to_numpy(out["indices"])])

    def loss(out):
        return keras.ops.sum(out["quantized"] * keras.ops.convert_to_tensor(upstream))

    grad_x = gradients(rotation, x, loss)[0]
    flat = x.reshape(-1, 4).astype("float64")
    q = codebook[nearest(flat, codebook)].astype("float64")
    expected = rotation_gradient(flat, q, upstream.reshape(-1, 4)).reshape(shape)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-4, atol=1e-5)
    # Not the straight-through estimator's identity.
    assert np.abs(grad_x - upstream).max() > 0.1
    np.testing.assert_allclose(gradients(straight, x, loss)[0], upstream, rtol=1e-6)


def test_rotation_trick_gives_the_codebook_no_gradient_through_the_output():
    codebook = np.random.default_rng(3).normal(size=(8, 4)).astype("float32")
    layer = built(VectorQuantizer, codebook, gradient_estimator="rotation")
    x = np.random.default_rng(4).normal(size=(5, 4)).astype("float32")
    _, grad_codebook = gradients(layer, x, lambda out: keras.ops.sum(out["quantized"]))
    assert grad_codebook is None or not np.any(grad_codebook)


def numpy_kmeans(flat, centres, iterations, spherical=False):
    """Lloyd's iterations; a centre left without vectors stays put."""
    for _ in range(iterations):
        indices = nearest(flat, centres)
        new = centres.copy()
        for k in range(len(centres)):
            members = flat[indices == k]
            if len(members):
                new[k] = normalized(members.mean(0)) if spherical else members.mean(0)
        centres = new
    return centres


@pytest.mark.parametrize("normalize_codes", [False, True])
def test_kmeans_init_runs_lloyd_on_the_first_training_batch_only(cls, normalize_codes):
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(64, 3)) + rng.choice([-4.0, 0.0, 4.0], size=(64, 1))).astype("float32")
    layer = cls(
        6, 3, kmeans_init=True, kmeans_iterations=3, normalize_codes=normalize_codes, seed=1
    )
    layer.build((None, 3))
    # Known starting centres, two of them equal: one ends up empty and stays.
    starts = x[[0, 1, 2, 3, 4, 4]]
    layer._random_rows = lambda flat: keras.ops.take(flat, [0, 1, 2, 3, 4, 4], axis=0)
    flat = normalized(x.astype("float64")) if normalize_codes else x.astype("float64")
    starts = normalized(starts) if normalize_codes else starts
    expected = numpy_kmeans(flat, starts, 3, spherical=normalize_codes)

    before = to_numpy(layer.codebook)
    layer(x, training=False)  # inference does not initialise
    np.testing.assert_array_equal(to_numpy(layer.codebook), before)
    out = layer(x, training=True)
    # The batch is quantized with the k-means centres.
    np.testing.assert_array_equal(to_numpy(out["indices"]), nearest(flat, expected))
    np.testing.assert_allclose(
        to_numpy(out["quantized"]), expected[nearest(flat, expected)], rtol=1e-5, atol=1e-5
    )
    assert to_numpy(layer.initialized) == 1.0
    if cls is VectorQuantizer:
        np.testing.assert_allclose(to_numpy(layer.codebook), expected, rtol=1e-5, atol=1e-5)
        # Once initialised, a training call leaves the codebook to the gradients.
        layer(x[::-1].copy(), training=True)
        np.testing.assert_allclose(to_numpy(layer.codebook), expected, rtol=1e-5, atol=1e-5)


def test_kmeans_init_inside_a_compiled_fit():
    images = blob_images(16, seed=2)
    model = small_vqvae("vector", kmeans_init=True, kmeans_iterations=4, seed=3)
    model.build((None, *images.shape[1:]))
    quantizer = model.quantizer
    drawn = to_numpy(quantizer.embeddings).copy()
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert to_numpy(quantizer.initialized) == 1.0
    # The codes moved from the initializer's draw to the encoder's outputs:
    # each code now is as near to them as to be used.
    assert np.abs(to_numpy(quantizer.embeddings_offset)).max() > 0.01
    latents = to_numpy(model.encoder(model.encoder_inputs(images))).reshape(-1, 8)
    used = np.unique(nearest(latents, to_numpy(quantizer.codebook)))
    assert len(used) > len(np.unique(nearest(latents, drawn)))
    assert len(used) >= 12


def test_default_options_add_no_variables():
    vq, ema = VectorQuantizer(16, 4), EMAVectorQuantizer(16, 4)
    vq.build((None, 4))
    ema.build((None, 4))
    assert [w.name for w in vq.weights] == ["embeddings"]
    assert [w.name for w in ema.weights] == [
        "cluster_size",
        "embedding_sum",
        "steps_unused",
        "initialized",
    ]
    # Configs saved before the options existed load with the defaults.
    for layer in (vq, ema):
        config = layer.get_config()
        old = {k: v for k, v in config.items() if k not in NEW_OPTIONS}
        assert type(layer).from_config(old).get_config() == config


NEW_OPTIONS = {
    "code_dim": 3,
    "normalize_codes": True,
    "kmeans_init": True,
    "kmeans_iterations": 4,
    "gradient_estimator": "rotation",
    "seed": 7,
}


def test_config_round_trip_with_every_option(cls):
    layer = cls(32, 6, **NEW_OPTIONS)
    config = layer.get_config()
    assert {k: config[k] for k in NEW_OPTIONS} == NEW_OPTIONS
    clone = cls.from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(6).normal(size=(8, 6)).astype("float32")
    layer(x)
    clone(x)
    assert [w.path.split("/", 1)[1] for w in clone.weights] == [
        w.path.split("/", 1)[1] for w in layer.weights
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"code_dim": 0}, "`code_dim` must be a positive integer. Received: code_dim=0"),
        ({"kmeans_iterations": 0}, "Received: kmeans_iterations=0"),
        (
            {"gradient_estimator": "ste"},
            r"one of \('straight_through', 'rotation'\). Received: gradient_estimator='ste'",
        ),
    ],
)
def test_bad_options_get_clear_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(8, 4, **kwargs)


def test_a_vqvae_with_every_option_round_trips_through_a_keras_file(tmp_path):
    images = blob_images(16)
    model = small_vqvae("vector", **NEW_OPTIONS)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)  # k-means, then gradients
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.quantizer.get_config() == model.quantizer.get_config()
    assert to_numpy(loaded.quantizer.initialized) == 1.0
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    np.testing.assert_array_equal(
        to_numpy(loaded.encode_indices(images)), to_numpy(model.encode_indices(images))
    )


@pytest.mark.slow
def test_weights_with_every_option_load_on_the_other_backends(tmp_path):
    images = blob_images(16, channels=3)
    model = small_vqvae("vector", channels=3, **NEW_OPTIONS)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)
    assert_weights_load_on_other_backends(model, images, tmp_path)


def test_the_deprecated_beta_still_loads_as_commitment_cost(cls):
    config = cls(16, 4, commitment_cost=0.4, name="q").get_config()
    assert config["commitment_cost"] == 0.4 and "beta" not in config
    old = dict(config)
    old["beta"] = old.pop("commitment_cost")
    with pytest.warns(DeprecationWarning, match="`beta` is deprecated: use `commitment_cost`"):
        clone = cls.from_config(old)
    assert clone.commitment_cost == 0.4 and clone.get_config() == config
    with pytest.warns(DeprecationWarning, match="`beta`"):
        assert cls(16, 4, beta=0.4, name="q").get_config() == config


def test_beta_and_commitment_cost_together_are_refused(cls):
    with pytest.raises(
        ValueError, match="`beta`.*`commitment_cost`.*beta=0.5.*commitment_cost=0.4"
    ):
        cls(16, 4, commitment_cost=0.4, beta=0.5)
    with pytest.raises(ValueError, match="Received both beta=0.5 and commitment_cost=0.4"):
        cls(16, 4, 0.4, beta=0.5)
