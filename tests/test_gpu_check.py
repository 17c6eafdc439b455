"""benchmarks/gpu_check.py in its quick mode, on this machine's CPU."""

import json
import pathlib
import subprocess
import sys

import keras
import pytest
from conftest import subprocess_env

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
CHECKS = {
    "vqvae_mnist psnr_db",
    "vqvae_cifar10 psnr_db",
    "pixelcnn_vqvae_mnist nll_nats_per_code",
    "transformer_vqvae_mnist nll_nats_per_code",
    "vqvae_mnist training: steps run",
    "vqvae_mnist training: every loss finite",
    "vqvae_mnist training: last step's loss below the first's",
    "pixelcnn_vqvae_mnist conditional_sample_agreement",
    "transformer_vqvae_mnist conditional_sample_agreement",
    "compression: decoded codes equal the encoded ones",
    "compression: decoded labels equal the encoded ones",
}


# JAX: a backend of the CUDA machine, and the faster of the two on a CPU.
@pytest.mark.slow(backend="jax")
def test_quick_gpu_check_passes_every_check_without_tensorflow(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary == json.loads(result.stdout)
    assert summary["backend"] == keras.config.backend() and summary["mode"] == "quick"
    assert {check["name"] for check in summary["checks"]} == CHECKS
    failed = [check for check in summary["checks"] if not check["passed"]]
    assert summary["passed"] and not failed, failed
    for check in summary["checks"]:
        if check["kind"] == "close":
            assert abs(check["value"] - check["reference"]) <= check["tolerance"], check
    # The CUDA machine has no TensorFlow: the check must not need it.
    assert summary["tensorflow_imported"] is (keras.config.backend() == "tensorflow")
    training = summary["throughput"]["vqvae_mnist training"]
    assert training["steps"] == 5 and training["images_per_second_after_first_step"] > 0
    compression = summary["throughput"]["compression"]
    assert compression["images"] == 64 and 0 < compression["bits_per_image"] < 49 * 7
