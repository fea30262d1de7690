"""Run every notebook in nbs/ top to bottom in a real Jupyter kernel, as a reader would: the book's tests.

Each notebook runs once, in a fresh kernel (nbclient, the engine behind `jupyter nbconvert --execute`)
started in nbs/, on a copy, so the committed notebooks are never modified; the run fails on the first
cell that raises. Notebooks run side by side in `--workers` processes (default: 2, or 1 on one CPU),
the longest first, each kernel's torch with its share of the CPUs (OMP_NUM_THREADS, unless set).

It skips exactly what `nbdev_test` skips (tests/test_book.py checks the two agree on every cell): cells
flagged with one of settings.ini's `tst_flags` (e.g. `#| notest`) unless --flags names it, `#| eval: false`
cells, and the `nbdev_export()` cell (notebooks running side by side must not rewrite the package under
each other). Flags whose cells guard themselves are the exception: `#| cuda` and `#| gpt2` cells run, as
they do in a reader's Jupyter, and skip their work with a one-line note where there is no GPU or no
GPT-2 weights. With --save the outputs are written back into the notebooks (how authors refresh the
outputs readers and the docs see); skipped cells keep the outputs they had.

    python tools/run_notebooks.py [NOTEBOOK ...] [--flags notest] [--save] [--workers 2] [--timeout 600]
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
_FLAG = re.compile(r"^\s*#\s*\|\s*(\w+)\s*$", re.MULTILINE)
_NO_EVAL = re.compile(r"^\s*#\s*\|\s*eval\s*:\s*false\s*$", re.MULTILINE | re.IGNORECASE)
SELF_GUARDED = {"cuda", "gpt2"}  # flags whose cells run in Jupyter and skip themselves (gpu_cell_ready, ...)
_EXPORT = "nbdev_export" + "("  # the closing export cell, skipped as nbdev_test does
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
            and (set(_FLAG.findall(c.source)) & skip or _NO_EVAL.search(c.source) or _EXPORT in c.source)]


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


def _run_one(path: Path, skip: set[str], timeout: int, save: bool) -> tuple[Path, float | None, str]:
    "Run one notebook in a worker process: (path, seconds or None if it failed, the failure)."
    try: return path, run_notebook(path, skip, timeout, save), ""
    except CellExecutionError as e: return path, None, str(e)
    except Exception as e: return path, None, f"{type(e).__name__}: {e}"  # a dead kernel, a cell's timeout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every nbs/*.ipynb")
    parser.add_argument("--flags", nargs="*", default=[], help="tst_flags whose cells run too, e.g. notest")
    parser.add_argument("--save", action="store_true", help="write the outputs back into the notebooks")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebooks run side by side (default: 2, or 1 on one CPU)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "nbs").glob("[!_]*.ipynb"))
    notebooks = sorted(notebooks, key=lambda p: p.stat().st_size, reverse=True)  # the longest first
    skip, total, failed, start = skipped_flags(set(args.flags)), 0.0, [], time.perf_counter()
    workers = max(1, min(args.workers, len(notebooks)))
    if workers > 1:  # each kernel's torch gets its share of the CPUs: threads that outnumber cores spin-wait
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    with ProcessPoolExecutor(workers) as pool:
        runs = [pool.submit(_run_one, path, skip, args.timeout, args.save) for path in notebooks]
        for run in as_completed(runs):
            path, seconds, failure = run.result()
            if seconds is None:
                failed.append(path.name)
                print(f"FAIL           {path.name}\n{failure}", flush=True)
            else:
                total += seconds
                print(f"ok    {seconds:6.1f} s  {path.name}", flush=True)
    print(f"{len(notebooks) - len(failed)} passed, {len(failed)} failed: {len(notebooks)} notebooks in a Jupyter kernel, "
          f"{total:.1f} s of execution in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
