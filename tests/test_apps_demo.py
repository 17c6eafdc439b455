import json

from vqkeras.apps.cli import main


def test_demo_runs_every_step_offline_and_never_clobbers(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["reconstruct_mnist"]["images"] == 256
    assert summary["reconstruct_mnist"]["psnr_db"] > 26
    assert summary["samples_mnist"]["command"].startswith("vqkeras sample --model vqvae_mnist")
    for name in (
        "reconstruct_mnist/reconstructions.png",
        "reconstruct_mnist/metrics.csv",
        "latents_mnist/codes.npz",
        "latents_mnist/codes.png",
        "latents_mnist/decoded/decoded.png",
        "samples_mnist/samples.png",
        "samples_mnist/codes.npz",
    ):
        assert (out / name).is_file(), name

    assert main(["demo", "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
