"""vqkeras without TensorFlow, on the JAX and PyTorch backends: a fresh
interpreter in which `import tensorflow` fails (`sys.modules` entries of
None), as in an install without vqkeras's `tensorflow` extra."""

import json
import subprocess
import sys

import keras
import pytest
from conftest import subprocess_env

pytestmark = pytest.mark.skipif(
    keras.config.backend() == "tensorflow", reason="the TensorFlow backend is TensorFlow"
)

WITHOUT_TENSORFLOW = """
import contextlib, io, json, os, pkgutil, sys
for name in ("tensorflow", "tensorflow_datasets"):
    sys.modules[name] = None  # `import tensorflow` raises ImportError
out = sys.argv[1]
import numpy as np
import vqkeras
import vqkeras.apps
from importlib import import_module
modules = [m.name for m in pkgutil.iter_modules(vqkeras.apps.__path__) if m.name != "__main__"]
for name in modules:
    import_module("vqkeras.apps." + name)
from vqkeras.apps.cli import main
from vqkeras.apps.inputs import load_images
from vqkeras.apps.train import tensorboard_callbacks
from vqkeras.augmentation import augmentation_layers, augmented_batches

result = {"apps": modules}
stdout = io.StringIO()
with contextlib.redirect_stdout(stdout):
    argv = ["reconstruct", "--model", "vqvae_mnist", "--input", "sample:mnist", "--limit", "8"]
    result["reconstruct"] = main([*argv, "--out", os.path.join(out, "r"), "--quiet"])
result["summary"] = json.loads(stdout.getvalue())
errors = {}
for what, call in [
    ("augment", lambda: augmented_batches(np.zeros((4, 8, 8, 1)), 2, augmentation_layers(["flip"]))),
    ("tfds", lambda: load_images("tfds:mnist", quiet=True)),
]:
    try:
        call()
    except ImportError as e:
        errors[what] = str(e)
result["errors"] = errors
result["tensorboard_callbacks"] = len(tensorboard_callbacks(out))
result["tensorflow_loaded"] = sys.modules.get("tensorflow") is not None
print(json.dumps(result))
"""


def test_library_and_apps_run_without_tensorflow(tmp_path):
    process = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert {"cli", "train", "reconstruct", "evaluate", "sample", "inputs"} <= set(result["apps"])
    assert result["reconstruct"] == 0
    summary = result["summary"]
    assert summary["images"] == 8 and 0.5 < summary["ssim"] <= 1.0
    assert (tmp_path / "r" / "metrics.csv").is_file()
    # The features that need TensorFlow say what to install.
    augment, tfds = result["errors"]["augment"], result["errors"]["tfds"]
    assert augment.startswith("Augmentation (a tf.data pipeline) needs TensorFlow")
    assert tfds.startswith("The input 'tfds:mnist' needs tensorflow-datasets and TensorFlow")
    for message in (augment, tfds):
        assert "pip install '.[tensorflow]'" in message
    # TensorBoard logs are skipped, with a notice.
    assert result["tensorboard_callbacks"] == 0
    assert "vqkeras: note: no TensorBoard logs" in process.stderr
    assert not result["tensorflow_loaded"]
