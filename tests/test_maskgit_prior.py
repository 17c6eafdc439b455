import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from vqkeras.models.maskgit_prior import MaskGITPrior

K = 8


def tiny_prior(num_classes=None, grid_shape=(4, 4), **kwargs):
    arguments = {"embed_dim": 16, "num_heads": 2, "num_layers": 2, "mlp_ratio": 2}
    arguments.update(kwargs)
    return MaskGITPrior(K, grid_shape, num_classes=num_classes, **arguments)


def stripe_grids(n, seed=0, shape=(4, 4)):
    """Learnable grids: code (c + column) mod K, with c drawn per grid; labels c mod 3."""
    offsets = np.random.default_rng(seed).integers(0, K, size=n)
    grids = (offsets[:, None, None] + np.arange(shape[1])[None, None, :]) % K
    grids = np.broadcast_to(grids, (n, *shape)).astype("int32")
    return np.ascontiguousarray(grids), (offsets % 3).astype("int32")


def test_mask_schedule_follows_the_cosine_and_reveals_every_step():
    schedule = MaskGITPrior.mask_schedule(16, 8)
    planned = [math.floor(16 * math.cos(math.pi / 2 * (t + 1) / 8)) for t in range(8)]
    assert schedule == tuple(planned) == (15, 14, 13, 11, 8, 6, 3, 0)
    # As many steps as codes: one code per step, the cosine notwithstanding.
    assert MaskGITPrior.mask_schedule(4, 4) == (3, 2, 1, 0)
    assert MaskGITPrior.mask_schedule(5, 1) == (0,)
    with pytest.raises(ValueError, match=r"\[1, 16\].*Received: num_steps=17"):
        MaskGITPrior.mask_schedule(16, 17)


@pytest.mark.parametrize("guidance_scale", [None, 2.0])
def test_sampling_keeps_exactly_the_planned_codes_per_step(guidance_scale):
    prior = tiny_prior(num_classes=3)
    labels = np.array([0, 1, 2], dtype="int32")
    grids, history = prior.sample(
        3, labels=labels, num_steps=5, guidance_scale=guidance_scale, seed=1, return_history=True
    )
    grids, history = to_numpy(grids), to_numpy(history)
    schedule = MaskGITPrior.mask_schedule(16, 5)
    assert history.shape == (5, 3, 4, 4) and grids.shape == (3, 4, 4)
    for step, still_masked in enumerate(schedule):
        np.testing.assert_array_equal((history[step] == -1).sum(axis=(1, 2)), still_masked)
        # Kept codes are final.
        known = history[step] != -1
        np.testing.assert_array_equal(history[step][known], grids[known])
    np.testing.assert_array_equal(history[-1], grids)
    assert grids.min() >= 0 and grids.max() < K


def test_attention_is_bidirectional_and_the_mask_token_is_accepted():
    prior = tiny_prior()
    grids = np.random.default_rng(0).integers(0, K, size=(2, 4, 4)).astype("int32")
    grids[1] = grids[0]
    grids[1, 3, 3] = prior.mask_token
    logits = to_numpy(prior(grids))
    assert logits.shape == (2, 4, 4, K)
    # Changing the last code changes the logits of the first position too.
    assert np.abs(logits[0, 0, 0] - logits[1, 0, 0]).max() > 1e-6


def test_fit_lowers_the_masked_nll_in_nats_per_code():
    # Grids of one code c (label c mod 3): any visible code gives the masked ones.
    offsets = np.random.default_rng(0).integers(0, K, size=256)
    grids = np.ascontiguousarray(np.broadcast_to(offsets[:, None, None], (256, 4, 4)))
    grids, labels = grids.astype("int32"), (offsets % 3).astype("int32")
    prior = tiny_prior(num_classes=3)
    prior.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = prior.evaluate(grids, labels, batch_size=256, verbose=0, return_dict=True)
    history = prior.fit(grids, labels, epochs=6, batch_size=32, verbose=0)
    after = prior.evaluate(grids, labels, batch_size=256, verbose=0, return_dict=True)
    assert sorted(history.history) == ["loss", "nll"]
    assert before["nll"] > 0.8 * math.log(K)
    assert after["nll"] < 0.5 * before["nll"]


def test_seeds_reproduce_and_guidance_one_is_conditional():
    prior = tiny_prior(num_classes=3)
    labels = np.array([0, 1, 2, 1], dtype="int32")
    first = to_numpy(prior.sample(4, labels=labels, seed=3))
    np.testing.assert_array_equal(first, to_numpy(prior.sample(4, labels=labels, seed=3)))
    assert (first != to_numpy(prior.sample(4, labels=labels, seed=4))).any()
    guided = to_numpy(prior.sample(4, labels=labels, guidance_scale=1.0, seed=3))
    np.testing.assert_array_equal(guided, first)
    unconditional = to_numpy(prior.sample(4, seed=3))
    np.testing.assert_array_equal(
        to_numpy(prior.sample(4, labels=labels, guidance_scale=0.0, seed=3)), unconditional
    )


def test_save_and_load_give_identical_logits(tmp_path):
    grids, labels = stripe_grids(8)
    prior = tiny_prior(num_classes=3, name="maskgit")
    prior.compile(optimizer="adam")
    prior.fit(grids, labels, epochs=1, batch_size=8, verbose=0)
    expected = to_numpy(prior((grids, labels)))
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, MaskGITPrior)
    assert restored.get_config() == prior.get_config()
    np.testing.assert_allclose(to_numpy(restored((grids, labels))), expected, atol=1e-6)
    np.testing.assert_array_equal(
        to_numpy(restored.sample(3, labels=labels[:3], seed=2)),
        to_numpy(prior.sample(3, labels=labels[:3], seed=2)),
    )


def test_bad_arguments_and_inputs_raise():
    with pytest.raises(ValueError, match="not a likelihood.*image_size"):
        tiny_prior(image_size=(16, 16, 1))
    prior = tiny_prior(num_classes=3)
    grids, labels = stripe_grids(4)
    prior.compile(optimizer="adam")
    # The mask token is an input of `call`, never a code of the data.
    with pytest.raises(ValueError, match=r"code indices in \[0, 8\)\. Received values in \[0, 8\]"):
        prior.fit(np.where(grids == 2, K, grids), labels, verbose=0)
    with pytest.raises(ValueError, match=r"code indices in \[0, 9\)"):
        prior((np.full((4, 4, 4), K + 1, dtype="int32"), labels))
    with pytest.raises(ValueError, match="num_steps=0"):
        prior.sample(2, labels=labels[:2], num_steps=0)
    with pytest.raises(ValueError, match="choice_temperature=-1"):
        prior.sample(2, labels=labels[:2], choice_temperature=-1)


def test_stacked_codes_given_a_condition_grid(tmp_path):
    stacked = {"depth": 2, "condition_num_embeddings": 5, "condition_grid_shape": (2, 2)}
    prior = tiny_prior(num_classes=3, **stacked)
    rng = np.random.default_rng(0)
    grids = rng.integers(0, K, size=(4, 4, 4, 2)).astype("int32")
    condition = rng.integers(0, 5, size=(4, 2, 2)).astype("int32")
    labels = np.array([0, 1, 2, 0], dtype="int32")
    logits = to_numpy(prior((grids, condition, labels)))
    assert logits.shape == (4, 4, 4, 2, K)
    # The mask token is accepted at any level; a condition code moves every logit.
    masked = np.where(np.arange(2) == 1, prior.mask_token, grids)
    assert np.isfinite(to_numpy(prior((masked, condition, labels)))).all()
    other = condition.copy()
    other[:, 1, 1] = (other[:, 1, 1] + 1) % 5
    moved = to_numpy(prior((grids, other, labels)))
    assert np.all(np.abs(moved - logits).max(axis=-1) > 1e-6)
    prior.compile(optimizer="adam")
    logs = prior.fit((grids, condition), labels, epochs=1, batch_size=2, verbose=0).history
    assert np.isfinite(logs["nll"][0])
    # The schedule counts every code of every level.
    codes, history = prior.sample(
        4, labels=labels, condition=condition, num_steps=4, seed=2, return_history=True
    )
    history = to_numpy(history)
    assert to_numpy(codes).shape == (4, 4, 4, 2) and history.shape == (4, 4, 4, 4, 2)
    for step, still_masked in enumerate(MaskGITPrior.mask_schedule(32, 4)):
        np.testing.assert_array_equal((history[step] == -1).sum(axis=(1, 2, 3)), still_masked)
    prior.save_to_preset(str(tmp_path / "preset"))
    restored = MaskGITPrior.from_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(
        to_numpy(restored.sample(2, labels=labels[:2], condition=condition[:2], seed=5)),
        to_numpy(prior.sample(2, labels=labels[:2], condition=condition[:2], seed=5)),
    )
