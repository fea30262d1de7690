"""Benchmark: pre-tokenizing a >= 100 MB corpus into a token store, against one whole-text `encode_ordinary` call.

Reproduce (Linux; needs Tiny Shakespeare in $TINY_GPT_DATA):

    TINY_GPT_DATA=/work/shared/data python benchmarks/bench_prepare.py            # 100 MB corpus
    TINY_GPT_DATA=/work/shared/data python benchmarks/bench_prepare.py --mb 300   # memory stays flat

The corpus is Tiny Shakespeare repeated with variations (lines shuffled with a different seed each time, and
upper/lower/swapped/title case), written as one file: one document of >= 100 MB, read in 1 MB pieces.
Every measurement runs in a fresh Python process; this script samples the memory of that process and all its
children every 20 ms from /proc: the sum of RSS (pages shared by forked workers counted once per process) and
the sum of PSS (shared pages divided among the processes sharing them: the tree's real footprint).
Targets: >= 24 MB/s with two workers; peak memory < 300 MB whatever the corpus size.
The hardware ceiling is measured in the same run: tiktoken alone (`encode_to_numpy`) on the corpus cut into 1 MB
pieces already in memory, in one process (per core) and in two forked processes (both cores; no reading, no
pickling, no writing). `prepare_store` can at best match the two-process figure.
CPU seconds of the main process and of its workers show where prepare's time goes, independently of the load.
`--repeat R` keeps the best of R runs of each measurement (the machine is shared).
Finally the store's ids are compared, all of them, with the ids of the whole-text encode.
The rows are recorded in benchmarks/results.json (section "prepare"), from which the README table is rendered.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402  (benchmarks/results.py: the one results file)

TARGET_MBS, TARGET_MB_MEMORY = 24.0, 300.0


def build_corpus(source: Path, dest: Path, megabytes: float) -> int:
    "Write Tiny Shakespeare variants to `dest` until it holds `megabytes` MB; returns its size in bytes."
    lines = source.read_text(encoding="utf-8").split("\n")
    cases = [str, str.upper, str.lower, str.swapcase, str.title]
    size, i = 0, 0
    with open(dest, "w", encoding="utf-8", newline="") as f:
        while size < megabytes * 1e6:
            shuffled = lines[:]
            random.Random(i).shuffle(shuffled)
            block = cases[i % len(cases)]("\n".join(shuffled)) + "\n\n"
            f.write(block)
            size += len(block.encode("utf-8"))
            i += 1
    return dest.stat().st_size


def _tree(pid: int) -> list[int]:
    "`pid` and all its descendants."
    children = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try: stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError: continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field): return int(line.split()[1])
    except OSError: pass
    return 0


def _busy_seconds() -> float:
    "CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _our_cpu() -> float:
    "CPU seconds of this script and of its finished children (and theirs)."
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_measured(code: str, *args: str) -> dict:
    """Run `python -c code args` and return its own timing line plus the process tree's peak RSS and PSS (MB), and
    the CPU seconds that other processes on the machine used meanwhile (`others_cpu`: the noise of a shared machine)."""
    busy0, ours0 = _busy_seconds(), _our_cpu()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    peak = {"rss": 0, "pss": 0, "procs": 0}

    def sample():
        while proc.poll() is None:
            pids = _tree(proc.pid)
            rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
            pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
            peak.update(rss=max(peak["rss"], rss), pss=max(peak["pss"], pss), procs=max(peak["procs"], len(pids)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode: raise SystemExit(f"measured run failed ({proc.returncode}):\n{out}")
    result = eval(out.strip().splitlines()[-1])  # the child prints a dict literal last
    others = max(0.0, (_busy_seconds() - busy0) - (_our_cpu() - ours0))
    return result | {"rss_mb": peak["rss"] / 1024, "pss_mb": peak["pss"] / 1024, "procs": peak["procs"], "others_cpu": others}


BASELINE = textwrap.dedent("""
    import sys, time, numpy as np
    from tiny_gpt.tokenizers import TikTokenizer
    enc = TikTokenizer("gpt2").encoding
    t0 = time.perf_counter()
    text = open(sys.argv[1], encoding="utf-8", newline="").read()
    ids = enc.encode_ordinary(text)                 # one call over the whole text: a Python list of ints
    np.array(ids, dtype=np.uint16).tofile(sys.argv[2])
    print({"seconds": time.perf_counter() - t0, "n_tokens": len(ids)})
""")

PREPARE = textwrap.dedent("""
    import resource, sys, time
    from tiny_gpt.store import _encoding, open_store, prepare_store
    def cpu(who): r = resource.getrusage(who); return r.ru_utime + r.ru_stime
    if __name__ == "__main__":
        t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)
        _encoding("gpt2")                          # what prepare_store does first; timed apart to show its share
        load = time.perf_counter() - t0
        prepare_store(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), executor=sys.argv[4], progress=False)
        seconds = time.perf_counter() - t0
        print({"seconds": seconds, "load_seconds": load, "n_tokens": open_store(sys.argv[2], verify=False).n_tokens,
               "main_cpu": cpu(resource.RUSAGE_SELF) - c0, "workers_cpu": cpu(resource.RUSAGE_CHILDREN)})
""")

RAW = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    from tiny_gpt.store import _encoding, first_safe_cut
    enc = _encoding("gpt2")
    data = open(sys.argv[1], "rb").read()
    pieces, a = [], 0
    while a < len(data):                       # 1 MB pieces at safe cuts, decoded: what a worker tokenizes
        b = first_safe_cut(data, a + (1 << 20)) or len(data)
        pieces.append(data[a:b].decode("utf-8")); a = b
    del data
    def encode(part):
        for text in part: enc.encode_to_numpy(text, disallowed_special=()).astype("<u2")
    if __name__ == "__main__":
        t0 = time.perf_counter(); encode(pieces); t1 = time.perf_counter()
        procs = [mp.get_context("fork").Process(target=encode, args=(pieces[i::2],)) for i in range(2)]
        for p in procs: p.start()
        for p in procs: p.join()
        print({"seconds": t1 - t0, "two_seconds": time.perf_counter() - t1})
""")


def result_rows(mb: float, runs: dict, base: dict | None, checks: list) -> list[dict]:
    "The rows of benchmarks/results.json: speed and memory of two worker processes against the single call."
    best = runs["prepare_store workers=2 (processes)"]
    both = runs["ceiling: tiktoken alone, 1 MB pieces in RAM, 2 processes"]
    threads = runs["prepare_store workers=2 (threads)"]
    single = f"one encode_ordinary call: {base['mbs']:.1f} MB/s" if base else ""
    rows = [
        {"what": f"tiny-gpt prepare, {mb:.0f} MB of text, 2 processes: speed", "ours": f"{best['mbs']:.1f} MB/s",
         "baseline": single, "ratio": round(best["mbs"] / base["mbs"], 2) if base else None, "target": "≥ 1.5×",
         "passed": best["mbs"] / base["mbs"] >= 1.5 if base else None},
        {"what": f"tiny-gpt prepare, {mb:.0f} MB of text, 2 processes: peak memory (PSS)",
         "ours": f"{best['pss_mb']:.0f} MB", "baseline": f"one encode_ordinary call: {base['pss_mb']:.0f} MB" if base
         else "", "ratio": round(base["pss_mb"] / best["pss_mb"], 1) if base else None,
         "target": f"< {TARGET_MB_MEMORY:g} MB", "passed": best["pss_mb"] < TARGET_MB_MEMORY},
        {"what": "the same, against tiktoken alone on 1 MB pieces in RAM, 2 processes (the ceiling)",
         "ours": f"{best['mbs']:.1f} MB/s", "baseline": f"{both['mbs']:.1f} MB/s",
         "ratio": round(best["mbs"] / both["mbs"], 2), "target": "", "passed": None},
        {"what": "the same with 2 threads instead of processes", "ours": f"{threads['mbs']:.1f} MB/s",
         "baseline": f"2 processes: {best['mbs']:.1f} MB/s", "ratio": round(threads["mbs"] / best["mbs"], 2),
         "target": "", "passed": None},
    ]
    exact = [bool(ok) for what, ok, _ in checks if what.startswith("store ids == encode_ordinary")]  # not np.bool_
    if exact:
        rows.append({"what": "store ids == encode_ordinary(whole text), every id", "ours": "identical" if exact[0]
                     else "DIFFERENT", "baseline": "", "ratio": None, "target": "identical", "passed": exact[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default 100)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure only the store (e.g. for --mb 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of this many runs of each measurement")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("TINY_GPT_DATA", "")) / "tinyshakespeare.txt"
    if not data.is_file(): raise SystemExit(f"{data} not found: set TINY_GPT_DATA to the folder holding tinyshakespeare.txt")
    command = (f"python benchmarks/bench_prepare.py --mb {args.mb:g}"  # recorded without this machine's paths
               f"{' --skip-baseline' if args.skip_baseline else ''}{f' --repeat {args.repeat}' if args.repeat > 1 else ''}")
    print(f"reproduce: TINY_GPT_DATA={shlex.quote(str(data.parent))} {command}\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start\n")
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        size = build_corpus(data, corpus, args.mb)
        mb = size / 1e6
        print(f"corpus: {mb:.1f} MB ({corpus.name}: Tiny Shakespeare x {mb / (data.stat().st_size / 1e6):.0f}, shuffled lines, 5 casings)\n")
        def fastest(*measure) -> dict:
            return min((run_measured(*measure) for _ in range(max(args.repeat, 1))), key=lambda r: r["seconds"])

        raws = [run_measured(RAW, str(corpus)) for _ in range(max(args.repeat, 1))]  # best of each ceiling, apart
        raw, two = min(raws, key=lambda r: r["seconds"]), min(raws, key=lambda r: r["two_seconds"])
        runs = {"ceiling: tiktoken alone, 1 MB pieces in RAM, 1 process": raw,
                "ceiling: tiktoken alone, 1 MB pieces in RAM, 2 processes": {**two, "seconds": two["two_seconds"]}}
        if not args.skip_baseline:
            runs["baseline: one encode_ordinary call -> list -> uint16"] = fastest(BASELINE, str(corpus), str(tmp / "baseline.bin"))
        for workers, executor in ((2, "process"), (2, "thread"), (1, "process")):
            runs[f"prepare_store workers={workers}" + (f" ({executor}{'es' if executor == 'process' else 's'})" if workers > 1 else " (in-process)")] = \
                fastest(PREPARE, str(corpus), str(tmp / f"store_{workers}_{executor}"), str(workers), executor)
        print(f"{'run':58} {'s':>6} {'MB/s':>6} {'RSS MB':>7} {'PSS MB':>7} {'procs':>5} {'CPU s: main + workers':>22} "
              f"{'others':>7}")
        for name, r in runs.items():
            r["mbs"] = mb / r["seconds"]
            cpu = f"{r['main_cpu']:.2f} + {r['workers_cpu']:.2f}" if "main_cpu" in r else ""
            mem = f"{r['rss_mb']:7.0f} {r['pss_mb']:7.0f} {r['procs']:5d}" if "two_seconds" not in r else f"{'':7} {'':7} {'':5}"
            others = f"{r['others_cpu']:6.1f}s"
            print(f"{name:58} {r['seconds']:6.2f} {r['mbs']:6.1f} {mem} {cpu:>22} {others}")

        print("(others: CPU seconds used by other processes on the machine during the run; 0 on a quiet machine. "
              "For the ceiling rows it covers both measurements of the run they come from.)")
        best = runs["prepare_store workers=2 (processes)"]
        core, both = raw["mbs"], runs["ceiling: tiktoken alone, 1 MB pieces in RAM, 2 processes"]["mbs"]
        checks = []
        print(f"\nceiling: tiktoken runs at {core:.1f} MB/s per core here, {both:.1f} MB/s in two processes "
              f"(2 x per core = {2 * core:.1f}); prepare_store with two workers reaches {best['mbs'] / both:.0%} of the "
              f"two-process ceiling ({best['mbs'] / (2 * core):.0%} of 2 x per core)")
        print(f"where the time goes (workers=2 processes, {best['seconds']:.2f} s): loading the encoding "
              f"{best['load_seconds']:.2f} s (once, before the workers fork); main process {best['main_cpu']:.2f} CPU s "
              f"in all, {1000 * (best['main_cpu'] - best['load_seconds']) / mb:.1f} ms per MB besides the encoding; "
              f"workers {best['workers_cpu']:.2f} CPU s ({mb / best['workers_cpu']:.1f} MB per CPU second; tiktoken alone: {core:.1f})")
        if not args.skip_baseline:
            base = runs["baseline: one encode_ordinary call -> list -> uint16"]
            print(f"speed  : workers=2 processes {best['mbs']:.1f} MB/s = {best['mbs'] / base['mbs']:.2f}x the single call "
                  f"({base['mbs']:.1f} MB/s); threads {runs['prepare_store workers=2 (threads)']['mbs']:.1f} MB/s")
            print(f"memory : workers=2 processes peak PSS {best['pss_mb']:.0f} MB (RSS sum {best['rss_mb']:.0f} MB) = "
                  f"{base['pss_mb'] / best['pss_mb']:.1f}x less than the single call ({base['pss_mb']:.0f} MB)")
            # correctness: every id of the store equals the whole-text encoding (one document -> ids + <|endoftext|>)
            header = json.loads((tmp / "store_2_process" / "shard-00000-of-00001.json").read_text(encoding="utf-8"))
            train_file = tmp / "store_2_process" / header["splits"]["train"]["file"]
            store = np.memmap(train_file, dtype="<u2", mode="r")
            whole = np.memmap(tmp / "baseline.bin", dtype="<u2", mode="r")
            same = len(store) == len(whole) + 1 and bool(np.array_equal(store[:-1], whole)) and store[-1] == 50256
            checks.append(("store ids == encode_ordinary(whole text) (all %d tokens)" % len(whole), same, ""))
            for name, r in runs.items():
                if name.startswith("prepare"):
                    checks.append((f"{name}: same token count", r["n_tokens"] == len(whole) + 1, ""))
        checks.append((f">= {TARGET_MBS:g} MB/s with two workers", best["mbs"] >= TARGET_MBS, f"{best['mbs']:.1f} MB/s "
                       f"({best['mbs'] / TARGET_MBS:.2f}x target; this machine's two-process tiktoken ceiling: {both:.1f} MB/s)"))
        if not args.skip_baseline:  # the machine ran the single call at ~16 MB/s: 24 MB/s there is 1.5x it
            ratio = best["mbs"] / base["mbs"]
            checks.append(("(machine-independent form) >= 1.5x the single call, as 24 vs 16 MB/s", ratio >= 1.5, f"{ratio:.2f}x"))
        checks.append((f"peak memory < {TARGET_MB_MEMORY:g} MB (PSS of the process tree)", best["pss_mb"] < TARGET_MB_MEMORY,
                       f"{best['pss_mb']:.0f} MB ({TARGET_MB_MEMORY / best['pss_mb']:.1f}x under)"))
        checks.append((f"peak memory < {TARGET_MB_MEMORY:g} MB (sum of RSS, shared pages counted per process)",
                       best["rss_mb"] < TARGET_MB_MEMORY, f"{best['rss_mb']:.0f} MB"))
        print()
        for what, ok, detail in checks: print(f"{'PASS' if ok else 'FAIL'}  {what}  {detail}")
        record("prepare", result_rows(mb, runs, None if args.skip_baseline else base, checks), command=command,
               notes="best of --repeat runs; 'others' CPU seconds (load from other processes) printed by the script")
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end (the machine is shared; timings vary by +-20 %)")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
