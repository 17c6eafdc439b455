"""Execute the tutorials as notebooks and fail on the first cell that errors.

Each `tutorials/NN_*.py` (a jupytext "percent" file) is converted to a notebook
in memory and run top to bottom in a fresh `python3` kernel, in quick mode
(`VQKERAS_TUTORIAL_QUICK=1`, unless `--full`), inside a temporary working
directory, with a non-interactive matplotlib backend. The time of each
tutorial is printed; on an error the tutorial, the cell number and the
cell's traceback are printed and the exit status is 1.

Usage:

    KERAS_BACKEND=jax python tutorials/run_tutorials.py               # all of them
    python tutorials/run_tutorials.py 04 06                           # by number or name
    python tutorials/run_tutorials.py --save-executed runs/notebooks  # keep the outputs
    python tutorials/run_tutorials.py --jobs 2                        # two at a time

Needs jupytext, nbclient and ipykernel (the `dev` extra).
"""

import argparse
import concurrent.futures
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

HERE = Path(__file__).resolve().parent


def tutorial_paths(selection):
    """The numbered tutorials, sorted; only those whose name starts with one of
    `selection` when it is not empty."""
    paths = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if not selection:
        return paths
    chosen = [p for p in paths if any(p.stem.startswith(s) for s in selection)]
    unknown = [s for s in selection if not any(p.stem.startswith(s) for p in paths)]
    if unknown:
        names = ", ".join(p.stem for p in paths)
        raise SystemExit(f"No tutorial matches {', '.join(unknown)}. Tutorials: {names}.")
    return chosen


def failing_cell(notebook):
    """(number among the code cells, 1-based; source) of the cell whose output
    holds an error, or (None, None)."""
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return number, cell.source
    return None, None


def run(path, timeout, save_dir):
    """Runs one tutorial; returns (seconds, error message or None)."""
    notebook = jupytext.read(path)
    start = time.time()
    error = None
    with tempfile.TemporaryDirectory(prefix=f"{path.stem}_") as workdir:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": workdir}},
        )
        try:
            client.execute()
        except CellTimeoutError as exc:
            error = f"a cell ran longer than {timeout} s: {exc}"
        except CellExecutionError as exc:
            number, source = failing_cell(notebook)
            where = f"code cell {number}" if number else "a cell"
            first_line = source.splitlines()[0] if source else ""
            # The kernel colours its tracebacks for a terminal; logs want plain text.
            traceback = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
            error = f"{where} (starting {first_line!r}) raised:\n{traceback}"
    seconds = time.time() - start
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, save_dir / f"{path.stem}.ipynb")
    return seconds, error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tutorials", nargs="*", help="numbers or names (default: all)")
    parser.add_argument("--full", action="store_true", help="full mode (downloads MNIST)")
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds allowed per cell (default: 600)"
    )
    parser.add_argument(
        "--save-executed", type=Path, metavar="DIR", help="write the executed notebooks here"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="tutorials run at the same time, each kernel with its share of the CPU cores "
        "(default: 1)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1. Received: {args.jobs}.")

    # The kernel inherits this environment. The inline backend is matplotlib's
    # headless backend for notebooks: it needs no display, closes each cell's
    # figures and keeps them as outputs of the executed notebook.
    os.environ["VQKERAS_TUTORIAL_QUICK"] = "0" if args.full else "1"
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    if args.jobs > 1:
        # Kernels whose backends each spread over every core would fight.
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ.setdefault(name, threads)
    failures = []
    start = time.time()
    paths = tutorial_paths(args.tutorials)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        runs = {pool.submit(run, p, args.timeout, args.save_executed): p for p in paths}
        for done in concurrent.futures.as_completed(runs):
            path, (seconds, error) = runs[done], done.result()
            status = "ok" if error is None else "FAILED"
            print(f"{path.name:32s} {seconds:7.1f} s  {status}", flush=True)
            if error is not None:
                failures.append(path.name)
                print(f"{path.name}: {error}", file=sys.stderr, flush=True)
    print(f"{'total (wall clock)':32s} {time.time() - start:7.1f} s")
    if failures:
        print(f"Failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
