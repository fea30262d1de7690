"""One notebook through nbdev's documentation processors, in a worker process of tools/build_docs.py.

A module of its own (not a function of the build script) so that workers started with `spawn`
import it by name."""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path


def process_one(job: tuple[Path, Path]) -> tuple[str, str, float]:
    "Run nbdev's documentation processors over one notebook `src` into `dst`; return (name, log, seconds)."
    src, dst = job
    start = time.perf_counter()
    os.chdir(src.parent)  # notebooks run from their folder, as under nbdev_test and Jupyter
    os.environ.setdefault("MPLBACKEND", "Agg")
    import nbdev.serve_drv
    from nbdev.processors import FilterDefaults
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        nbdev.serve_drv.main((src, dst, FilterDefaults))  # sets IN_TEST: the notebook's own nbdev_export() is skipped
    return src.name, log.getvalue(), time.perf_counter() - start
