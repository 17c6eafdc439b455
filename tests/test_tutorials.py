"""The tutorials' form and their runner's error reporting.

CI executes the tutorials themselves with `tutorials/run_tutorials.py`; these
tests only check that every tutorial is a well-formed jupytext notebook with
the documented quick/full switch, and that the runner names the cell that
fails.
"""

import importlib.util
import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
PATHS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
QUICK_SETTING = 'QUICK = os.environ.get("VQKERAS_TUTORIAL_QUICK", "1") != "0"'


def load_runner():
    spec = importlib.util.spec_from_file_location("run_tutorials", TUTORIALS / "run_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ten_numbered_tutorials():
    assert [p.name[:2] for p in PATHS] == [f"{n:02d}" for n in range(1, 11)]


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_tutorial_is_a_percent_notebook_with_the_quick_switch(path):
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith("# ")
    assert kinds.count("markdown") >= 5 and kinds.count("code") >= 5
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    # The switch sits in the first code cell, with the imports.
    assert QUICK_SETTING in code[0]
    # Every notebook ends with suggestions.
    assert "What to try next" in notebook.cells[-1].source
    # Nothing in quick mode may download: downloads only in the `else` of `if QUICK`.
    for source in code:
        for match in re.finditer(r"load_data\(\)", source):
            before = source[: match.start()]
            assert before.rfind("else:") > before.rfind("if QUICK"), source


def test_tutorial_paths_selects_by_number_and_rejects_unknown():
    runner = load_runner()
    assert [p.name for p in runner.tutorial_paths(["04"])] == ["04_codebook_collapse.py"]
    assert runner.tutorial_paths([]) == PATHS
    with pytest.raises(SystemExit, match="No tutorial matches 99"):
        runner.tutorial_paths(["99"])


def test_runner_names_the_failing_cell(tmp_path):
    runner = load_runner()
    path = tmp_path / "99_broken.py"
    path.write_text(
        "# %% [markdown]\n# # Broken\n\n# %%\nx = 1\n\n# %%\nraise ValueError('boom here')\n"
    )
    seconds, error = runner.run(path, timeout=120, save_dir=tmp_path / "executed")
    assert seconds > 0
    assert "code cell 2" in error and "boom here" in error
    assert "\x1b[" not in error  # plain text, not terminal colours
    assert (tmp_path / "executed" / "99_broken.ipynb").exists()


def test_runner_passes_a_working_notebook(tmp_path, monkeypatch):
    runner = load_runner()
    path = tmp_path / "98_fine.py"
    # The kernel inherits the environment (main() sets quick mode there).
    monkeypatch.setenv("VQKERAS_TUTORIAL_QUICK", "1")
    path.write_text("# %%\nimport os\n\nassert os.environ['VQKERAS_TUTORIAL_QUICK'] == '1'\n")
    assert runner.run(path, timeout=120, save_dir=None)[1] is None


def test_runner_runs_tutorials_side_by_side_and_names_each_failure(tmp_path, monkeypatch, capsys):
    runner = load_runner()
    monkeypatch.setattr(runner, "HERE", tmp_path)
    # main() sets these for the kernels; monkeypatch puts them back afterwards.
    for name in (
        "VQKERAS_TUTORIAL_QUICK",
        "MPLBACKEND",
        "OMP_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ):
        monkeypatch.delenv(name, raising=False)
    sleep = "# %%\nimport time\n\ntime.sleep(2)\n"
    (tmp_path / "01_fine.py").write_text(sleep)
    (tmp_path / "02_broken.py").write_text(sleep + "\n# %%\nraise ValueError('boom two')\n")
    (tmp_path / "03_fine.py").write_text(sleep)
    assert runner.main(["--jobs", "3"]) == 1
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines()}
    assert lines["01_fine.py"] == "ok" and lines["03_fine.py"] == "ok"
    assert lines["02_broken.py"] == "FAILED"
    assert "02_broken.py: code cell 2" in err and "boom two" in err
    assert "Failed: 02_broken.py" in err
    with pytest.raises(SystemExit):
        runner.main(["--jobs", "0"])
    assert "--jobs must be at least 1. Received: 0." in capsys.readouterr().err
