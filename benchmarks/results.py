"""The one results file of the benchmarks: benchmarks/results.json.

Every benchmark script records its figures here (`record`), one section per script, each with the
date, the machine, the versions and every row it measured. The README's performance table is
rendered from this file (`python tools/readme.py`; CI fails when README.md disagrees with it) and
prose quotes it or links to it; nobody retypes a figure. Arguments that are paths of the machine
(a corpus in TINY_GPT_DATA, a temporary folder) belong in `notes` relative to their folder, not in
`command`.

A row is a dict:
    what      what was measured, e.g. "Dataset build, Tiny Shakespeare, T=256, stride 1"
    ours      tiny_gpt's figure, as text with its unit ("0.019 s")
    baseline  the same-run baseline's figure and name ("25.8 s, book GPTDatasetV1"), or ""
    ratio     baseline ÷ ours (or ours ÷ baseline, as `target` says), a number or None
    target    the target, as text ("≥ 10×", "≤ 1.90", "< 300 MB")
    passed    True / False / None (no target)
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
ROW_KEYS = ("what", "ours", "baseline", "ratio", "target", "passed")


def processor() -> str:
    "The processor's model name (Linux's /proc/cpuinfo, else what `platform` knows)."
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What ran the benchmark: processor and count, platform, Python, the load, the main packages' versions,
    and (where the benchmark imported torch) the vector instructions torch's CPU kernels use: a float32
    matrix product runs about twice as fast with AVX-512 as with AVX2, which moves every MFU figure."""
    versions = {}
    for name in ("torch", "numpy", "tiktoken", "transformers", "tiny_gpt"):
        try: versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError: pass
    torch = sys.modules.get("torch")
    return {"processor": processor(), "cpus": os.cpu_count(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if torch else None,
            "platform": platform.platform(terse=True), "python": platform.python_version(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None, "versions": versions}


def default_command() -> str:
    "How this benchmark was started, with the script relative to the repository (no machine's folders)."
    root = RESULTS.parents[1]
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.is_relative_to(root): argv0 = script.relative_to(root).as_posix()
    else: argv0 = Path(sys.argv[0]).name if sys.argv else ""
    return " ".join(["python", argv0, *sys.argv[1:]]).strip()


def load() -> dict:
    "Everything recorded so far: {bench name: section}."
    return json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}


def record(bench: str, rows: list[dict], command: str = "", notes: str = "", on: dict | None = None) -> None:
    "Replace `bench`'s section of the results file with `rows` (written atomically); `on`: another machine's facts."
    for row in rows:
        if set(row) != set(ROW_KEYS): raise ValueError(f"a results row has keys {sorted(row)}, expected {ROW_KEYS}")
    results = load()
    results[bench] = {"date": datetime.date.today().isoformat(), "machine": on or machine(),
                      "command": command or default_command(),
                      "notes": notes, "rows": rows}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS)


def merge(path: str | os.PathLike) -> None:
    "Record the rows that `bench_gpu.py --out FILE` wrote on a GPU machine, with that machine's GPU and versions."
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    record("gpu", data["rows"], command=data["command"], notes=data.get("notes", ""), on=data["machine"])


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Merge a GPU benchmark's rows into benchmarks/results.json.")
    parser.add_argument("--merge", required=True, metavar="FILE", help="the JSON that bench_gpu.py --out wrote")
    merge(parser.parse_args().merge)
    print(f"merged into {RESULTS.name}: run `python tools/readme.py` to update the README's table")
