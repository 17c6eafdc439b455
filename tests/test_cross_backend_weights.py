"""Weights saved under one backend load under the other two with the same outputs.

The other model families check the same in their own test files, with the
helper in conftest.py.
"""

import pytest
from conftest import assert_weights_load_on_other_backends, blob_images, small_vqvae


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ema", "gradient"])
def test_vqvae_weights_load_on_the_other_backends(tmp_path, kind):
    images = blob_images(16, channels=3)
    model = small_vqvae(kind, channels=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)  # move weights and EMA state
    assert_weights_load_on_other_backends(model, images, tmp_path)
