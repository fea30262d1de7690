"""Shared by every test file: under `pytest -n N` (pytest-xdist) each worker gets its share of the CPUs.

torch starts one thread per core in every process; N workers on as many cores would run N times as many
threads as cores, and torch's threads spin-wait for each other, so small models get many times slower.
"""
import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:  # before any test module imports torch; subprocesses (the command line, torchrun) inherit it
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
