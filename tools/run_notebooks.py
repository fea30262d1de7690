"""Run every notebook in nbs/ top to bottom in a real Jupyter kernel, as a reader would.

nbdev_test executes notebooks with its own executor; readers use Jupyter. This script uses
nbclient (the engine behind `jupyter nbconvert --execute`) on a copy of each notebook, in a fresh
kernel started in nbs/, so the committed notebooks are never modified, and fails on the first cell
that raises.

It skips what `nbdev_test` skips: cells flagged with one of settings.ini's `tst_flags` (e.g.
`#| notest`) unless --flags names it, and `#| eval: false` cells. `#| cuda` cells are the exception:
they run, as they do in a reader's Jupyter, and guard themselves (`if gpu_cell_ready():` prints
that the cell was skipped on a machine without a GPU). With --save the outputs are written back
into the notebooks (how authors refresh the outputs readers and the docs see); skipped cells keep
the outputs they had.

    python tools/run_notebooks.py [NOTEBOOK ...] [--flags notest] [--save] [--timeout 600]
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
_FLAG = re.compile(r"^\s*#\s*\|\s*(\w+)\s*$", re.MULTILINE)
_NO_EVAL = re.compile(r"^\s*#\s*\|\s*eval\s*:\s*false\s*$", re.MULTILINE | re.IGNORECASE)
SELF_GUARDED = {"cuda"}  # flags whose cells run in Jupyter and skip themselves (gpu_cell_ready)
SKIP_TAG = "skip-execution"  # nbclient's own tag for cells it must not run


def skipped_flags(flags: set[str]) -> set[str]:
    "The tst_flags of settings.ini whose cells do not run: not switched on, and not self-guarded."
    for line in (ROOT / "settings.ini").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("tst_flags"):
            return set(line.split("=", 1)[1].split()) - SELF_GUARDED - flags
    return set()


def cells_to_skip(nb, skip: set[str]) -> list[int]:
    "Indices of the code cells nbdev_test would not run either."
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and (set(_FLAG.findall(c.source)) & skip or _NO_EVAL.search(c.source))]


def run_notebook(path: Path, skip: set[str], timeout: int, save: bool = False) -> float:
    "Execute `path` in a fresh kernel started in its folder; return the seconds it took."
    original = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(original)
    skipped = cells_to_skip(nb, skip)
    for i in skipped: nb.cells[i].metadata.setdefault("tags", []).append(SKIP_TAG)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", skip_cells_with_tag=SKIP_TAG,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    if save:
        for i in skipped: nb.cells[i] = original.cells[i]  # tags and outputs as they were
        nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every nbs/*.ipynb")
    parser.add_argument("--flags", nargs="*", default=[], help="tst_flags whose cells run too, e.g. notest")
    parser.add_argument("--save", action="store_true", help="write the outputs back into the notebooks")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "nbs").glob("[!_]*.ipynb"))
    skip, total, failed = skipped_flags(set(args.flags)), 0.0, []
    for path in notebooks:
        try:
            seconds = run_notebook(path, skip, args.timeout, args.save)
            total += seconds
            print(f"ok    {seconds:6.1f} s  {path.name}", flush=True)
        except CellExecutionError as e:
            failed.append(path.name)
            print(f"FAIL           {path.name}\n{e}", flush=True)
    print(f"{len(notebooks) - len(failed)} passed, {len(failed)} failed: {len(notebooks)} notebooks in a Jupyter kernel, "
          f"{total:.1f} s of execution")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
