"""Benchmarks of tiny_gpt's BPE, each against a baseline measured in the same run.

1. Training a 512-token vocabulary on Tiny Shakespeare: tiny_gpt vs a naive trainer that recounts
   every pair after each merge (timed on its first merges and extrapolated linearly: every naive
   merge recounts the whole corpus, so each costs about the same). Target >= 100x.
2. Training 4,096- and 32,768-token vocabularies on two >= 100 MB corpora (Shakespeare with
   variations; the Python standard library's .py files) vs rustbpe (nanochat's Rust trainer, a
   benchmark-only dependency) with the same split pattern; the vocabularies must be identical.
   Target: within 3x of rustbpe's time, < 500 MB peak RSS. Hugging Face `tokenizers` is timed too
   when installed (its pre-tokenizer differs, so only time is compared).
3. Encoding Tiny Shakespeare with GPT-2's merges: tiny_gpt vs tiktoken on one thread, best of 3 cold
   runs each. Identical ids, target within 5x.
4. Encoding "x" * 1,000,000 (one pre-token) with GPT-2's merges: tiny_gpt's heap merge vs tiktoken.
   Identical ids, target <= 20 s.

A full run records every row in benchmarks/results.json (section "bpe"), from which the README's table
is rendered; `--quick` is a smoke run and records nothing.

Each measurement runs in a fresh Python process so its peak RSS is its own.

    pip install rustbpe tokenizers      # benchmark-only
    TINY_GPT_DATA=<folder with tinyshakespeare.txt> python benchmarks/bench_bpe.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402  (benchmarks/results.py: the one results file)

from tiny_gpt.io import corpus_path  # noqa: E402  (one error naming the file and TINY_GPT_DATA when missing)

SHAKESPEARE = corpus_path("tinyshakespeare.txt")


def child(job: str, *args: str) -> dict:
    "Run `job` in a fresh interpreter; return its JSON result plus its peak RSS in MB."
    out = subprocess.run([sys.executable, __file__, "--child", job, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    "Current resident memory of this process."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    "Peak RSS of this process plus its largest child (pool workers), in MB."
    import resource
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


# ---------------------------------------------------------------- jobs run in a child process
def job_train(path: str, vocab_size: str, workers: str) -> dict:
    from tiny_gpt.bpe import BPETokenizer
    base = _rss_mb()
    start = time.perf_counter()
    tok = BPETokenizer.train(Path(path), vocab_size=int(vocab_size) + 1, workers=int(workers), progress=False)
    seconds = time.perf_counter() - start
    ranks = sorted((t.hex(), i) for t, i in tok.ranks.items())
    return {"seconds": seconds, "rss_mb": _peak_mb(), "added_mb": _peak_mb() - base, "vocab": ranks}


def job_naive(path: str, n_merges: str) -> dict:
    "The textbook trainer: every pre-token of the text as its own id list, all pairs recounted per merge."
    from collections import Counter
    from tiny_gpt.bpe import merge_word, pretokenize
    text = Path(path).read_text(encoding="utf-8")
    start = time.perf_counter()
    chunks = [tuple(p.encode()) for p in pretokenize(text)]
    for new_id in range(256, 256 + int(n_merges)):
        pairs = Counter(pair for chunk in chunks for pair in zip(chunk, chunk[1:]))
        best = max(pairs.items(), key=lambda kv: (kv[1], (-kv[0][0], -kv[0][1])))[0]
        chunks = [merge_word(c, best, new_id) for c in chunks]
    return {"seconds": time.perf_counter() - start, "rss_mb": _peak_mb()}


def job_rustbpe(path: str, vocab_size: str) -> dict:
    import rustbpe
    from tiny_gpt.bpe import _file_chunks  # the same safe cuts as tiny_gpt, so both count the same pre-tokens
    from tiny_gpt.tokenizers import GPT2_PATTERN
    start = time.perf_counter()
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(_file_chunks(Path(path)), int(vocab_size), pattern=GPT2_PATTERN)
    seconds = time.perf_counter() - start
    ranks = sorted((bytes(t).hex(), i) for t, i in tok.get_mergeable_ranks())
    return {"seconds": seconds, "rss_mb": _peak_mb(), "vocab": ranks}


def job_hf(path: str, vocab_size: str) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    start = time.perf_counter()
    tok.train([path], trainer)
    return {"seconds": time.perf_counter() - start, "rss_mb": _peak_mb()}


def job_encode(which: str, repeats: str = "3") -> dict:
    "Best of `repeats` cold encodings (a fresh tokenizer each time: tiny_gpt's pre-token cache starts empty)."
    text = SHAKESPEARE.read_text(encoding="utf-8")
    if which == "tiktoken":
        from tiny_gpt.tokenizers import TikTokenizer
        make = lambda: TikTokenizer("gpt2").encoding
    else:
        from tiny_gpt.bpe import BPETokenizer
        make = BPETokenizer.gpt2
    times = []
    for _ in range(int(repeats)):
        tok = make()
        start = time.perf_counter(); ids = tok.encode_ordinary(text); times.append(time.perf_counter() - start)
    return {"seconds": min(times), "rss_mb": _peak_mb(), "n": len(ids), "hash": hash(tuple(ids))}


def job_long(which: str, n: str = "1000000") -> dict:
    "Encode one pre-token of `n` x's."
    text = "x" * int(n)
    if which == "tiktoken":
        from tiny_gpt.tokenizers import gpt2_encoding
        tok = gpt2_encoding()
    else:
        from tiny_gpt.bpe import BPETokenizer
        tok = BPETokenizer.gpt2()
    start = time.perf_counter(); ids = tok.encode_ordinary(text); seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_mb": _peak_mb(), "n": len(ids), "hash": hash(tuple(ids))}


def row(what: str, ours: str, baseline: str, ratio: float | None, target: str, passed: bool | None) -> dict:
    "One row of the results file."
    return {"what": what, "ours": ours, "baseline": baseline, "ratio": None if ratio is None else round(ratio, 2),
            "target": target, "passed": passed}


# ---------------------------------------------------------------- corpora
def shakespeare_corpus(dest: Path, target_mb: int) -> Path:
    "Tiny Shakespeare repeated with variations (case changes, shuffled lines) up to `target_mb`."
    text, rng = SHAKESPEARE.read_text(encoding="utf-8"), random.Random(0)
    variants = [str.upper, str.lower, str.swapcase, str.title, lambda t: t]
    with open(dest, "w", encoding="utf-8") as f:
        while f.tell() < target_mb * 1_000_000:
            lines = text.splitlines(keepends=True)
            rng.shuffle(lines)
            f.write(rng.choice(variants)("".join(lines)))
    return dest


def stdlib_corpus(dest: Path, target_mb: int) -> Path:
    "The standard library's .py files, concatenated (in rounds with tabs/spaces varied) up to `target_mb`."
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    with open(dest, "w", encoding="utf-8") as f:
        for variant in range(100):
            for path in files:
                try: src = path.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError): continue
                f.write(src.replace("    ", "\t") if variant % 2 else src)
                if f.tell() >= target_mb * 1_000_000: return dest
    return dest


def report(label: str, ours: float, baseline: float, target: str, ok: bool) -> None:
    print(f"  {label}: tiny_gpt {ours:.2f} s vs {baseline:.2f} s -> ratio {baseline / ours:.2f}x  (target {target})  "
          f"{'PASS' if ok else 'FAIL'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--quick", action="store_true", help="10 MB corpora, vocab 4,096 only")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(globals()[f"job_{args.child[0]}"](*args.child[1:])))
        return
    print(f"tiny_gpt BPE benchmarks — {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (quote figures only "
          f"when it is well under 1); reproduce: python benchmarks/bench_bpe.py"
          + (" --quick" if args.quick else ""), flush=True)

    print("\n1. training, vocab 512, Tiny Shakespeare (1.1 MB)")
    ours = child("train", str(SHAKESPEARE), "512", "1")
    naive_merges = 16 if args.quick else 256
    naive = child("naive", str(SHAKESPEARE), str(naive_merges))
    naive_full = naive["seconds"] * (512 - 256) / naive_merges
    print(f"  naive recount-every-pair: {naive['seconds']:.1f} s for {naive_merges} merges"
          + (f" -> {naive_full:.0f} s for 256 (linear extrapolation overestimates: later merges are cheaper)" if args.quick else ""))
    report("incremental", ours["seconds"], naive_full, ">= 100x", naive_full / ours["seconds"] >= 100)
    rows = [row("Training, vocab 512, Tiny Shakespeare", f"{ours['seconds']:.2f} s",
                f"{naive_full:.0f} s, plain recount-every-pair loop" + (" (extrapolated)" if args.quick else ""),
                naive_full / ours["seconds"], "≥ 100×", naive_full / ours["seconds"] >= 100)]

    print(f"  (load average now {os.getloadavg()[0]:.2f})")
    print("\n3. encoding Tiny Shakespeare with GPT-2's merges")
    a, b = child("encode", "tiny_gpt"), child("encode", "tiktoken")
    same = (a["n"], a["hash"]) == (b["n"], b["hash"])
    print(f"  identical ids: {same} ({a['n']:,} tokens)")
    print(f"  tiny_gpt {a['seconds']:.2f} s vs tiktoken {b['seconds']:.2f} s -> {a['seconds'] / b['seconds']:.1f}x slower "
          f"(target within 5x)  {'PASS' if same and a['seconds'] <= 5 * b['seconds'] else 'FAIL'}", flush=True)
    rows.append(row("Encoding Tiny Shakespeare, GPT-2 merges (ours ÷ tiktoken)", f"{a['seconds']:.2f} s",
                    f"{b['seconds']:.2f} s, tiktoken", a["seconds"] / b["seconds"], "≤ 5×, identical ids",
                    same and a["seconds"] <= 5 * b["seconds"]))

    print("\n4. encoding \"x\" * 1,000,000, one pre-token")
    a, b = child("long", "tiny_gpt"), child("long", "tiktoken")
    same = (a["n"], a["hash"]) == (b["n"], b["hash"])
    ok = same and a["seconds"] <= 20
    print(f"  identical ids: {same} ({a['n']:,} tokens); tiny_gpt {a['seconds']:.2f} s vs tiktoken {b['seconds']:.2f} s "
          f"(target <= 20 s)  {'PASS' if ok else 'FAIL'}", flush=True)
    rows.append(row('Encoding "x" × 1,000,000 as one pre-token (ours ÷ tiktoken)', f"{a['seconds']:.2f} s",
                    f"{b['seconds']:.2f} s, tiktoken", a["seconds"] / b["seconds"], "≤ 20 s, identical ids", ok))

    try: import rustbpe  # noqa: F401
    except ImportError:
        print("\n2. skipped: pip install rustbpe (benchmark-only) to compare with nanochat's trainer")
        return finish(rows, args.quick, "rustbpe not installed: training against rustbpe not measured")
    mb = 10 if args.quick else 100
    vocabs = [4096] if args.quick else [4096, 32768]
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {"shakespeare": shakespeare_corpus(Path(tmp) / "shakespeare.txt", mb),
                   "python stdlib": stdlib_corpus(Path(tmp) / "stdlib.txt", mb)}
        for name, path in corpora.items():
            size = path.stat().st_size / 1e6
            for vocab in vocabs:
                print(f"\n2. training, vocab {vocab:,}, {name} ({size:.0f} MB)", flush=True)
                theirs = child("rustbpe", str(path), str(vocab))
                ours = child("train", str(path), str(vocab), str(args.workers))
                same = ours["vocab"] == theirs["vocab"]
                print(f"  identical vocabulary to rustbpe: {same}")
                print(f"  peak RSS: tiny_gpt {ours['rss_mb']:.0f} MB, {ours['added_mb']:.0f} MB above the interpreter and imports "
                      f"(target < 500 MB) {'PASS' if ours['rss_mb'] < 500 else 'FAIL'}; rustbpe {theirs['rss_mb']:.0f} MB")
                ok = same and ours["seconds"] <= 3 * theirs["seconds"] and ours["rss_mb"] < 500
                rows.append(row(f"Training, vocab {vocab:,}, {name} ({size:.0f} MB) (ours ÷ rustbpe; {ours['rss_mb']:.0f} MB)",
                                f"{ours['seconds']:.2f} s", f"{theirs['seconds']:.2f} s, rustbpe",
                                ours["seconds"] / theirs["seconds"], "≤ 3×, < 500 MB, identical vocabulary", ok))
                print(f"  vs rustbpe: tiny_gpt {ours['seconds']:.2f} s vs {theirs['seconds']:.2f} s -> "
                      f"{ours['seconds'] / theirs['seconds']:.2f}x rustbpe's time  (target within 3x)  {'PASS' if ok else 'FAIL'}",
                      flush=True)
                try:
                    hf = child("hf", str(path), str(vocab))
                    print(f"  Hugging Face tokenizers: {hf['seconds']:.2f} s, {hf['rss_mb']:.0f} MB (byte-level pre-tokenizer, time only)")
                except subprocess.CalledProcessError:
                    print("  Hugging Face tokenizers: not installed (pip install tokenizers)")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    finish(rows, args.quick)


def finish(rows: list[dict], quick: bool, notes: str = "") -> None:
    "Record the rows in the one results file (a full run only)."
    if quick:
        print("\n--quick: a smoke run, nothing recorded"); return
    record("bpe", rows, notes=notes)
    print(f"\nrecorded {len(rows)} rows in benchmarks/results.json (section 'bpe')")


if __name__ == "__main__":
    main()
