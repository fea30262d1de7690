"""Benchmarks for tiny_gpt.data: dataset build, batch throughput, a 100M-token store.

Reproduce:  TINY_GPT_DATA=/path/to/data python benchmarks/bench_dataset.py          (Linux: reads /proc for RSS)
            add --quick to skip the slow baselines (the book's dataset, RandomSampler over 100M windows)

Every measurement that compares runs in the same invocation; memory is measured in a fresh child
process per design (peak RSS from /proc/self/status after resetting it, plus tracemalloc for Python
objects), so one design's garbage never counts against another. Timings on a shared machine are noisy.
A full run records every row in benchmarks/results.json (`record("dataset", rows)` of results.py), from
which the README's table is rendered; a partial run (--quick, --only) records only with --record.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from results import record  # noqa: E402  (benchmarks/results.py: the one results file)


# ---------------------------------------------------------------- memory helpers (Linux /proc, no psutil)
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"): return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")

def reset_peak_rss() -> None:
    "Make VmHWM (peak RSS) start again from the current RSS (Linux >= 4.0)."
    Path("/proc/self/clear_refs").write_text("5")

def rss_mb() -> float: return _status_kb("VmRSS") / 1024
def peak_rss_mb() -> float: return _status_kb("VmHWM") / 1024


# ---------------------------------------------------------------- baselines re-implemented here
def book_dataset(token_ids: list[int], max_length: int, stride: int):
    "The reference design (GPTDatasetV1 of the book): two new int64 tensors per window, in a Python loop."
    import torch
    inputs, targets = [], []
    for i in range(0, len(token_ids) - max_length, stride):
        inputs.append(torch.tensor(token_ids[i:i + max_length]))
        targets.append(torch.tensor(token_ids[i + 1:i + max_length + 1]))
    return inputs, targets

def nanogpt_get_batch(path: str, block_size: int, batch_size: int):
    "nanoGPT's get_batch: re-open the memmap (as nanoGPT does, against a memory leak), one slice per row."
    import torch
    data = np.memmap(path, dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y

def per_item_dataset(path: str, block_size: int):
    "A plain map-style Dataset: one __getitem__ per window, the DataLoader stacks them."
    import torch
    class PerItem(torch.utils.data.Dataset):
        def __init__(self): self.data = np.memmap(path, dtype=np.uint16, mode="r")
        def __len__(self): return len(self.data) - block_size
        def __getitem__(self, i):
            w = torch.from_numpy(self.data[i:i + block_size + 1].astype(np.int64))
            return w[:-1], w[1:]
    return PerItem()


class RawStore:
    "The attributes of a tiny_gpt TokenStore that tiny_data_loader reads, over raw uint16 shard files."
    def __init__(self, files): 
        self.shards = [np.memmap(f, dtype=np.uint16, mode="r") for f in files]
        self.path, self.tokenizer_name = Path(files[0]).parent, "gpt2"


# ---------------------------------------------------------------- child processes (one measurement each)
def child(name: str, arg: str) -> dict:
    import torch
    torch.set_num_threads(1)
    import tiny_gpt.data as D
    if name in ("build-tiny", "build-book"):
        ids = np.load(arg).tolist()            # what tokenizer.encode returns: a Python list
        build = (lambda: D.NextTokenDataset(ids, 256, 1)) if name == "build-tiny" else (lambda: book_dataset(ids, 256, 1))
        reset_peak_rss(); before = rss_mb()
        t0 = time.perf_counter(); ds = build(); seconds = time.perf_counter() - t0   # timed without tracemalloc
        added = peak_rss_mb() - before
        n = len(ds) if name == "build-tiny" else len(ds[0])
        py_peak = None
        if name == "build-tiny":  # tracemalloc sees Python objects only (not tensor storage) and slows the book's loop 2x
            del ds; tracemalloc.start(); ds = build(); py_peak = tracemalloc.get_traced_memory()[1] / 2**20; tracemalloc.stop()
        return dict(seconds=seconds, added_mb=added, tracemalloc_mb=py_peak, n_windows=n)
    if name in ("first-tiny", "first-randomsampler", "first-randperm"):
        base = rss_mb(); reset_peak_rss()
        t0 = time.perf_counter()
        if name == "first-tiny":
            loader = D.tiny_data_loader(RawStore([arg]), batch_size=8, max_length=1024, stride=1, shuffle=True)
        elif name == "first-randperm":   # a permutation held as one int64 tensor
            perm = torch.randperm(len(np.memmap(arg, dtype=np.uint16, mode="r")) - 1024)
            loader = [D.collate_windows(D.TokenStoreDataset(RawStore([arg]).shards, 1024, 1).__getitems__(perm[:8]))]
        else:
            loader = torch.utils.data.DataLoader(per_item_dataset(arg, 1024), batch_size=8, shuffle=True)
        x, y = next(iter(loader))
        seconds = time.perf_counter() - t0
        n_windows = len(loader.dataset) if hasattr(loader, "dataset") else len(perm)
        return dict(seconds=seconds, added_mb=peak_rss_mb() - base, base_mb=base, n_windows=n_windows, shape=list(x.shape))
    raise ValueError(name)


def run_child(name: str, arg: str) -> dict:
    r = subprocess.run([sys.executable, str(HERE), "--child", name, arg], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"child {name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report: printed, and kept for results.json
ROWS: list[dict] = []
def report(what: str, ours: float, base: float, target: float, unit: str, higher_is_better: bool,
           baseline_name: str) -> None:
    "A figure of ours against the same run's baseline, with the ratio and its target."
    ratio = base / ours if not higher_is_better else ours / base
    ok = ratio >= target
    ROWS.append(dict(what=what, ours=f"{ours:.4g} {unit}", baseline=f"{base:.4g} {unit}, {baseline_name}",
                     ratio=round(ratio, 1), target=f"≥ {target:g}×", passed=ok))
    print(f"  {what:<46} tiny_gpt {ours:>10.4g} {unit:<7} baseline {base:>10.4g} {unit:<7} "
          f"ratio {ratio:>8.1f}x  target >= {target:g}x  {'PASS' if ok else 'FAIL'}")

def check(what: str, value: float, limit: float, unit: str) -> None:
    "A figure of ours against an absolute limit."
    ok = value < limit
    ROWS.append(dict(what=what, ours=f"{value:.4g} {unit}", baseline="", ratio=None, target=f"< {limit:g} {unit}",
                     passed=ok))
    print(f"  {what:<46} {value:>10.4g} {unit:<4} target < {limit:g} {unit}  {'PASS' if ok else 'FAIL'}")

def note(what: str, ours: str, baseline: str = "") -> None:
    "A figure recorded for comparison, without a target."
    ROWS.append(dict(what=what, ours=ours, baseline=baseline, ratio=None, target="", passed=None))


def bench_build(tmp: Path, ids: np.ndarray, quick: bool) -> None:
    print(f"\n(1) Dataset build: Tiny Shakespeare, {len(ids):,} GPT-2 tokens, max_length 256, stride 1")
    np.save(tmp / "ids.npy", ids)
    ours = run_child("build-tiny", str(tmp / "ids.npy"))
    print(f"  tiny_gpt NextTokenDataset: {ours['seconds']:.4f} s, +{ours['added_mb']:.1f} MB RSS "
          f"(tracemalloc peak {ours['tracemalloc_mb']:.1f} MB), {ours['n_windows']:,} windows")
    if quick:
        print("  (book baseline skipped: --quick)")
        note(f"Dataset build, Tiny Shakespeare, T=256, stride 1 ({ours['n_windows']:,} windows)",
             f"{ours['seconds']:.4f} s, +{ours['added_mb']:.1f} MB RSS")
        return
    book = run_child("build-book", str(tmp / "ids.npy"))
    print(f"  book GPTDatasetV1 design:  {book['seconds']:.2f} s, +{book['added_mb']:.0f} MB RSS, {book['n_windows']:,} windows")
    assert book["n_windows"] == ours["n_windows"]
    what = f"Dataset build, Tiny Shakespeare, T=256, stride 1 ({ours['n_windows']:,} windows)"
    report(f"{what}: time", ours["seconds"], book["seconds"], 500, "s", False, "book GPTDatasetV1")
    report(f"{what}: added peak RSS", max(ours["added_mb"], 0.1), book["added_mb"], 50, "MB", False,
           "book GPTDatasetV1")


def throughput(make_batch, batch_size: int, T: int, min_seconds: float = 0.6) -> float:
    "Tokens per second (inputs + targets, int64) of `make_batch`, over at least `min_seconds`."
    make_batch()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds: make_batch(); n += 1
    return n * 2 * batch_size * T / elapsed


def bench_throughput(tmp: Path, ids: np.ndarray) -> None:
    import torch
    import tiny_gpt.data as D
    torch.set_num_threads(1)
    path = tmp / "shakespeare.bin"; ids.astype(np.uint16).tofile(path)
    print(f"\n(3) Batches from a store ({len(ids):,} tokens, uint16 memmap), tokens/s of int64 inputs+targets, num_workers=0")
    for B in (8, 64):
        for T in (256, 1024):
            def loop(loader):
                it = iter(loader)
                def step():
                    nonlocal it
                    try: return next(it)
                    except StopIteration: it = iter(loader); return next(it)
                return step
            ours = throughput(loop(D.tiny_data_loader(RawStore([path]), B, T, 1, sampling="random", seed=0)), B, T)
            ours_w = throughput(loop(D.tiny_data_loader(RawStore([path]), B, T, 1, shuffle=True, seed=0)), B, T)
            nano = throughput(lambda: nanogpt_get_batch(str(path), T, B), B, T)
            item = throughput(loop(torch.utils.data.DataLoader(per_item_dataset(str(path), T), batch_size=B, shuffle=True)), B, T)
            print(f"  B={B:<3} T={T:<5} tiny_gpt random {ours/1e6:7.1f} Mtok/s, shuffled windows {ours_w/1e6:7.1f} | "
                  f"nanoGPT get_batch {nano/1e6:6.1f} | per-item DataLoader {item/1e6:6.1f}")
            what = f"Batches from a store, B={B} T={T}, tokens/s (slower of random and shuffled windows)"
            report(what, min(ours, ours_w) / 1e6, nano / 1e6, 8, "Mtok/s", True, "nanoGPT get_batch")
            report(what, min(ours, ours_w) / 1e6, item / 1e6, 2, "Mtok/s", True, "per-window DataLoader")


def bench_big_store(tmp: Path, quick: bool, n_tokens: int = 100_000_000) -> None:
    print(f"\n(4) A {n_tokens/1e6:.0f}M-token synthetic store (uint16 memmap, {2*n_tokens/1e6:.0f} MB), max_length 1024, stride 1, shuffle")
    path = tmp / "big.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for start in range(0, n_tokens, 10_000_000):
            rng.integers(0, 50257, min(10_000_000, n_tokens - start), dtype=np.uint16).tofile(f)
    ours = run_child("first-tiny", str(path))
    print(f"  tiny_gpt: first batch {ours['shape']} after {ours['seconds']:.3f} s, +{ours['added_mb']:.1f} MB peak RSS "
          f"(interpreter + torch + tiny_gpt: {ours['base_mb']:.0f} MB), {ours['n_windows']:,} windows")
    what = f"{n_tokens/1e6:.0f}M-token store, T=1024, stride 1, shuffled: first batch"
    check(f"{what}, time", ours["seconds"], 1.0, "s")
    check(f"{what}, peak RSS beyond interpreter + torch", ours["added_mb"], 1024, "MB")
    perm = run_child("first-randperm", str(path))
    print(f"  for comparison, a permutation as one int64 tensor (torch.randperm): "
          f"{perm['seconds']:.2f} s, +{perm['added_mb']:.0f} MB")
    note(f"{what}, permutation as one int64 tensor", "", f"{perm['seconds']:.2f} s, +{perm['added_mb']:.0f} MB")
    if quick: print("  (RandomSampler baseline skipped: --quick)"); return
    rs = run_child("first-randomsampler", str(path))
    print(f"  for comparison, DataLoader(shuffle=True) with torch's RandomSampler: "
          f"{rs['seconds']:.2f} s, +{rs['added_mb']:.0f} MB")
    note(f"{what}, torch RandomSampler", "", f"{rs['seconds']:.2f} s, +{rs['added_mb']:.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="skip the slow, memory-hungry baselines")
    ap.add_argument("--only", choices=["build", "throughput", "store"], help="run one section")
    ap.add_argument("--record", action="store_true", help="record a partial run in benchmarks/results.json too")
    args = ap.parse_args()
    if args.child: print(json.dumps(child(*args.child))); return
    import torch
    import tiny_gpt
    from tiny_gpt.io import corpus_path, io_load_text_file
    from tiny_gpt.tokenizers import TikTokenizer
    print(f"tiny_gpt {tiny_gpt.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine: timings are noisy)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    text = io_load_text_file(corpus_path("tinyshakespeare.txt"), verbose=False)
    ids = np.array(TikTokenizer("gpt2", {"<|endoftext|>"}).encode(text), dtype=np.int64)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "build"): bench_build(tmp, ids, args.quick)
        if args.only in (None, "throughput"): bench_throughput(tmp, ids)
        if args.only in (None, "store"): bench_big_store(tmp, args.quick)
    checked = [r["passed"] for r in ROWS if r["passed"] is not None]
    print(f"\n{sum(checked)}/{len(checked)} targets met" + ("" if all(checked) else " — see FAIL lines"))
    partial = args.quick or args.only
    if partial and not args.record: print("partial run: not recorded (add --record to record it)"); return
    record("dataset", ROWS, notes="partial run (--quick/--only)" if partial else "")
    print("recorded in benchmarks/results.json")


if __name__ == "__main__":
    main()
