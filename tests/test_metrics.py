import numpy as np
from conftest import to_numpy

from vqkeras.metrics import CodebookPerplexity, CodebookUsage


def test_usage_and_perplexity_accumulate_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 5, size=(4, 3, 3)) for _ in range(3)]  # codes 0..4 of 10
    usage, perplexity = CodebookUsage(10), CodebookPerplexity(10)
    for batch in batches:
        usage.update_state(batch)
        perplexity.update_state(batch)

    counts = np.bincount(np.concatenate([b.ravel() for b in batches]), minlength=10)
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * np.log(probs[probs > 0])).sum()
    np.testing.assert_allclose(to_numpy(usage.result()), (counts > 0).mean())
    np.testing.assert_allclose(to_numpy(perplexity.result()), np.exp(entropy), rtol=1e-5)

    usage.reset_state()
    perplexity.reset_state()
    usage.update_state(np.zeros((2, 2), "int32"))
    perplexity.update_state(np.zeros((2, 2), "int32"))
    np.testing.assert_allclose(to_numpy(usage.result()), 0.1)
    np.testing.assert_allclose(to_numpy(perplexity.result()), 1.0)


def test_uniform_codes_have_perplexity_k():
    perplexity = CodebookPerplexity(8)
    perplexity.update_state(np.tile(np.arange(8), 5))
    np.testing.assert_allclose(to_numpy(perplexity.result()), 8.0, rtol=1e-5)
