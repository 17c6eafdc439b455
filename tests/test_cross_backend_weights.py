"""Weights saved under one backend load under the other two with the same outputs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import blob_images, small_vqvae

# Run in a fresh interpreter per backend: the backend is fixed at import.
LOAD_AND_PREDICT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    import vqkeras  # registers the classes
    config, weights, images, out = sys.argv[1:]
    with open(config) as f:
        model = keras.saving.deserialize_keras_object(json.load(f))
    images = np.load(images)
    model.build(images.shape)
    model.load_weights(weights)
    np.savez(
        out,
        reconstruction=model.predict(images, verbose=0),
        indices=keras.ops.convert_to_numpy(model.encode_indices(images)),
    )
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ema", "gradient"])
def test_weights_load_on_the_other_backends(tmp_path, kind):
    images = blob_images(16, channels=3)
    model = small_vqvae(kind, channels=3)
    model.compile(optimizer="adam")
    model.fit(images, epochs=1, batch_size=8, verbose=0)  # move weights and EMA state
    model.save_weights(tmp_path / "model.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps(keras.saving.serialize_keras_object(model)))
    np.save(tmp_path / "images.npy", images)
    expected_reconstruction = model.predict(images, verbose=0)
    expected_indices = keras.ops.convert_to_numpy(model.encode_indices(images))

    script = tmp_path / "load.py"
    script.write_text(LOAD_AND_PREDICT)
    for backend in {"tensorflow", "jax", "torch"} - {keras.config.backend()}:
        out = tmp_path / f"{backend}.npz"
        env = dict(os.environ, KERAS_BACKEND=backend)
        args = ["config.json", "model.weights.h5", "images.npy", out.name]
        result = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{backend}:\n{result.stderr[-3000:]}"
        loaded = np.load(out)
        np.testing.assert_array_equal(loaded["indices"], expected_indices, err_msg=backend)
        np.testing.assert_allclose(
            loaded["reconstruction"], expected_reconstruction, atol=2e-5, err_msg=backend
        )
