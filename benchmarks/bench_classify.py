"""Benchmark for chapters 9 and 9a: the spam classifier's test accuracy next to the bag-of-tokens baseline,
LoRA against the chapter's fine-tuning, and the library's `train` against the book's loop.

Reproduce:  python benchmarks/bench_classify.py          (full run, ~12 min on 2 cores; records "classify")
            python benchmarks/bench_classify.py --quick  (a smoke test, under a minute: nothing recorded)

Everything is chapter 9's, offline on the CPU, one torch thread per process (as the chapters run): the SMS
Spam Collection with the book's balancing and 70 / 10 / 20 split (seed 123; 1,045 / 149 / 300 messages padded
to 120 tokens, batches of 8), chapter 9's small GPT (`CLASSIFY_CONFIG`: GPT-2's tokenizer, 2 blocks, 32 dims,
context 128), AdamW from `make_adamw`, two epochs of the book's `train_classifier_simple` (eval_freq 50,
eval_iter 5), the chapters' learning rates (every layer 1e-3, last block 3e-3, LoRA rank 16 alpha 16 2e-3).
Every accuracy is on the 300 test messages.

Two starts. "Random": chapter 9's seeded random weights, as in both chapters. A LoRA adapter can only bend
weights that already know something, so frozen random weights cannot show what LoRA is for. "Pretrained": the
same model first trained as a language model (next token, the library's `train`, a fixed number of steps,
about two minutes) on SMS texts outside the validation and test sets: every message of the collection whose
text is not the text of a validation or test message (the training split and the hams that the balancing
left out). No validation or test text is ever seen in pretraining; the script checks it.

Each fine-tuning runs in a process of its own, which reports its seconds per epoch (the two epochs' mean,
with the loop's evaluations) and its peak resident memory: the process's (VmHWM, imports and data included)
and the growth during training (VmHWM reset before training, minus the resident memory then). The three ways
are run interleaved, twice, and the faster of the two times is kept (the accuracies of the two agree).

Library against the book: one epoch (130 steps) of the same model (every layer, last real token, the same
starting weights) with the library's `train` (`classification_task`, `classification_loader`, out_dir=None:
no checkpoint files; warmup and cosine schedule, the training loss read back every 10 steps) against the
book's `train_classifier_simple` (constant learning rate). The book's loop does not clip gradients, so the
row with a target runs `train` with grad_clip=None: the same optimizer work. A second row runs `train` with
its default clipping at 1.0 (a norm over every gradient, a walk over the parameters and a multiply per step),
which the book's loop does not do. Evaluation work: the book's loop evaluates at steps 0, 50, 100 (5
training + 5 validation batches for the losses) and at the epoch's end (accuracy on 5 + 5 batches): 40
batches; `train` at steps 50, 100, 130 (5 + 5 batches for the losses, 5 validation batches for the
accuracy): 45 batches. The three alternate, the first of each order rotating; the medians are compared:
ratio = the book's seconds / the library's, target >= 1.0x.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tiny_gpt from this checkout
sys.path.insert(0, str(HERE.parent))      # results.py

from torch.utils.data import DataLoader, Subset  # noqa: E402

from tiny_gpt.classify import (CLASSIFY_CONFIG, SpamDataset, calc_accuracy_loader,  # noqa: E402
                               classification_loader, classification_task, create_balanced_dataset,
                               find_sms_spam, random_split, to_classifier, train_bag_of_tokens,
                               train_classifier_simple, trainable_parameters)
from tiny_gpt.data import collate_windows, tiny_data_loader  # noqa: E402
from tiny_gpt.lora import replace_linear_with_lora  # noqa: E402
from tiny_gpt.model import GPTModel, init_gpt2_weights  # noqa: E402
from tiny_gpt.tokenizers import TikTokenizer  # noqa: E402
from tiny_gpt.train import make_adamw, train  # noqa: E402

import results  # noqa: E402

BOOK_RANDOM = 0.9367      # the book's repository, chapter 6's extra experiments: GPT-2 from random weights
BOOK_PRETRAINED = 0.9567  # the book's chapter 6: GPT-2 124M, last block, final norm and head
LR = {"all": 1e-3, "last_block": 3e-3, "lora": 2e-3}  # the chapters' learning rates
PRETRAIN = dict(steps=400, batch_size=8, lr=3e-3, warmup_steps=40)  # next-token steps: about two minutes
PRETRAIN_QUICK = dict(steps=4, batch_size=8, lr=3e-3, warmup_steps=1)


# ---------------------------------------------------------------------------------------------
# Chapter 9's data
# ---------------------------------------------------------------------------------------------

def chapter_data(quick: bool) -> dict:
    "Chapter 9's split, datasets and the book's loaders; --quick: the first 80 / 40 / 40 messages."
    import pandas as pd
    df = pd.read_csv(find_sms_spam(), sep="\t", header=None, names=["Label", "Text"])
    balanced_df = create_balanced_dataset(df)
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})
    train_df, validation_df, test_df = random_split(balanced_df, 0.7, 0.1)
    tokenizer = TikTokenizer("gpt2")
    train_dataset = SpamDataset(train_df, tokenizer)
    val_dataset = SpamDataset(validation_df, tokenizer, max_length=train_dataset.max_length)
    test_dataset = SpamDataset(test_df, tokenizer, max_length=train_dataset.max_length)
    d = dict(df=df, train_df=train_df, validation_df=validation_df, test_df=test_df, tokenizer=tokenizer,
             train_dataset=train_dataset, val_dataset=val_dataset, test_dataset=test_dataset)
    sets = [Subset(s, range(n)) for s, n in ((train_dataset, 80), (val_dataset, 40), (test_dataset, 40))] \
        if quick else [train_dataset, val_dataset, test_dataset]
    torch.manual_seed(123)
    d["train_loader"] = DataLoader(sets[0], batch_size=8, shuffle=True, num_workers=0, drop_last=True)
    d["val_loader"] = DataLoader(sets[1], batch_size=8, num_workers=0, drop_last=False)
    d["test_loader"] = DataLoader(sets[2], batch_size=8, num_workers=0, drop_last=False)
    d["sets"] = sets
    return d


def pretraining_texts(d: dict) -> list[str]:
    "Every text of the collection that is not the text of a validation or test message."
    held_out = set(d["validation_df"]["Text"]) | set(d["test_df"]["Text"])
    texts = [t for t in d["df"]["Text"] if t not in held_out]
    assert not held_out & set(texts)
    return texts


def pretrain(d: dict, path: Path, quick: bool) -> dict:
    """Chapter 9's model trained as a language model on `pretraining_texts`; its state dict saved at `path`,
    without the output head. `to_classifier` replaces that head anyway, so the pretraining head predicts only
    the token ids that occur in the texts (the targets renumbered): ten times faster than all 50,257."""
    p = PRETRAIN_QUICK if quick else PRETRAIN
    texts = pretraining_texts(d)
    ids = []
    for t in texts: ids += d["tokenizer"].encode(t) + [50256]  # each message, then <|endoftext|>
    used = torch.tensor(sorted(set(ids)))                          # the ids the head can predict
    renumber = torch.zeros(CLASSIFY_CONFIG.vocab_size, dtype=torch.long)
    renumber[used] = torch.arange(len(used))
    def collate(batch):  # inputs keep GPT-2's ids; targets become positions in `used`
        inputs, targets = collate_windows(batch)
        return [inputs, renumber[targets]]
    n_val = len(ids) // 20  # the last 5 % to watch the loss on (pretraining texts too)
    T = CLASSIFY_CONFIG.context_length
    kw = dict(batch_size=p["batch_size"], max_length=T, stride=T, collate_fn=collate)
    tr = tiny_data_loader(torch.tensor(ids[:-n_val]), seed=123, **kw)
    va = tiny_data_loader(torch.tensor(ids[-n_val:]), shuffle=False, **kw)
    torch.manual_seed(123)
    model = init_gpt2_weights(GPTModel(CLASSIFY_CONFIG))
    model.out_head = nn.Linear(CLASSIFY_CONFIG.emb_dim, len(used), bias=False)  # (emb_dim -> used ids)
    t0 = time.perf_counter()
    h = train(model, tr, va, device="cpu", out_dir=None, max_steps=p["steps"], lr=p["lr"],
              warmup_steps=p["warmup_steps"], eval_interval=p["steps"], eval_iters=20, progress=False)
    seconds = time.perf_counter() - t0
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("out_head.")}, path)
    return dict(texts=len(texts), tokens=len(ids), used_ids=len(used), steps=p["steps"], seconds=seconds,
                train_loss=h["eval"]["train_loss"][-1], val_loss=h["eval"]["val_loss"][-1],
                epochs=p["steps"] * p["batch_size"] * T / (len(ids) - n_val))


# ---------------------------------------------------------------------------------------------
# One fine-tuning, in a process of its own
# ---------------------------------------------------------------------------------------------

def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"): return int(line.split()[1])
    raise KeyError(key)


def chapter_model(way: str, start: str | None) -> torch.nn.Module:
    "Chapter 9's classifier from its seeded weights (or the pretrained ones): every layer, last block, LoRA."
    torch.manual_seed(123)
    model = init_gpt2_weights(GPTModel(CLASSIFY_CONFIG))
    if start is not None:  # the pretrained body; its head is replaced below
        missing, unexpected = model.load_state_dict(torch.load(start, map_location="cpu", weights_only=True),
                                                    strict=False)
        assert missing == ["out_head.weight"] and not unexpected, (missing, unexpected)
    model = to_classifier(model, trainable="last_block" if way == "last_block" else "all")
    if way == "lora":
        for param in model.parameters(): param.requires_grad = False
        replace_linear_with_lora(model, rank=16, alpha=16)
    return model


def fine_tune(way: str, position: str, start: str | None, quick: bool) -> dict:
    "Chapter 9a's `fine_tune`: two epochs of the book's loop; accuracy, seconds per epoch, memory."
    torch.set_num_threads(1)
    d = chapter_data(quick)
    model = chapter_model(way, start)
    optimizer = make_adamw(model, lr=LR[way], weight_decay=0.1)
    rss_before = _status_kb("VmRSS")
    with contextlib.suppress(OSError): Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    torch.manual_seed(123)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train_classifier_simple(model, d["train_loader"], d["val_loader"], optimizer, "cpu", num_epochs=2,
                                eval_freq=50, eval_iter=5, position=position)
    seconds = (time.perf_counter() - t0) / 2
    grown = (_status_kb("VmHWM") - rss_before) / 1024
    acc = calc_accuracy_loader(d["test_loader"], model, "cpu", position=position)
    return dict(accuracy=acc, correct=round(acc * len(d["sets"][2])), seconds=seconds, grown_mb=grown,
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                trainable=trainable_parameters(model), total=sum(p.numel() for p in model.parameters()))


def in_child(job: dict) -> dict:
    "Run `job` in a fresh Python process; its result."
    out = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(job)], capture_output=True, text=True)
    if out.returncode: raise RuntimeError(f"{job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The library's train against the book's loop
# ---------------------------------------------------------------------------------------------

def epoch_book(model, d) -> float:
    "Seconds of one epoch of the book's loop (optimizer made inside the timing, as `train` makes its own)."
    torch.manual_seed(123)
    t0 = time.perf_counter()
    optimizer = make_adamw(model, lr=1e-3, weight_decay=0.1)
    with contextlib.redirect_stdout(io.StringIO()):
        train_classifier_simple(model, d["train_loader"], d["val_loader"], optimizer, "cpu", num_epochs=1,
                                eval_freq=50, eval_iter=5, position="last_real")
    return time.perf_counter() - t0


def epoch_library(model, d, grad_clip: float | None = None) -> float:
    "Seconds of one epoch of the library's `train`: as many steps, no checkpoint files."
    task = classification_task(["ham", "spam"], d["train_dataset"].max_length, position="last_real")
    loader = classification_loader(d["sets"][0], batch_size=8, seed=123)
    torch.manual_seed(123)
    t0 = time.perf_counter()
    train(model, loader, d["val_loader"], device="cpu", out_dir=None, task=task, max_steps=len(loader), lr=1e-3,
          warmup_steps=10, eval_interval=50, eval_iters=5, grad_clip=grad_clip, progress=False)
    return time.perf_counter() - t0


def loops(reps: int, quick: bool) -> dict:
    "Median seconds of one epoch: the book's loop, `train` without and with clipping, in rotating order."
    torch.set_num_threads(1)
    d = chapter_data(quick)
    start = chapter_model("all", None)
    runs = {"book": epoch_book, "library": epoch_library,
            "library_clip": lambda m, d: epoch_library(m, d, grad_clip=1.0)}
    times = {k: [] for k in runs}
    for run in runs.values(): run(copy.deepcopy(start), d)  # warm-up, not timed
    names = list(runs)
    for rep in range(reps):
        for name in names[rep % 3:] + names[:rep % 3]: times[name].append(runs[name](copy.deepcopy(start), d))
    return {**{k: statistics.median(v) for k, v in times.items()}, "all": times, "steps": len(d["train_loader"])}


def child(job: dict) -> None:
    if job["kind"] == "fine_tune": out = fine_tune(job["way"], job["position"], job["start"], job["quick"])
    else: out = loops(job["reps"], job["quick"])
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------------------------

WAYS = {"all": "every layer", "last_block": "last block, final norm, head", "lora": "LoRA rank 16"}


def pct(r: dict, n: int) -> str: return f"{r['accuracy']:.2%} ({r['correct']}/{n})"


def share(r: dict) -> str: return f"{r['trainable']:,} trainable ({r['trainable'] / r['total']:.2%})"


def lora_row(start: str, lora: dict, block: dict, n: int) -> dict:
    "LoRA against the chapter's fine-tuning from the same start: within 1 point, <= 5 % trainable."
    passed = lora["accuracy"] >= block["accuracy"] - 0.01 and lora["trainable"] <= 0.05 * lora["total"]
    return dict(what=f"Test accuracy, LoRA rank 16, last real token, {start} start",
                ours=f"{pct(lora, n)}, {share(lora)}",
                baseline=f"{pct(block, n)}, last block, final norm, head (the chapter's fine-tuning)",
                ratio=None, target="≥ baseline − 1 point, ≤ 5 % trainable", passed=bool(passed))


def accuracy_rows(base: float, runs: dict, n: int) -> list[dict]:
    "The test accuracies: the baseline, the GPT from random weights, and both starts' three ways."
    bag = f"{base:.2%}, bag of tokens"
    book = round(BOOK_RANDOM * n)  # 93.67 % of 300: 281 messages
    rows = [dict(what=f"Test accuracy, bag of tokens (chapter 9's baseline), {n} test messages",
                 ours=f"{base:.2%} ({round(base * n)}/{n})", baseline="", ratio=None, target="", passed=None)]
    for key, what in ((("random", "all", "last"), "every layer, last position (the book's)"),
                      (("random", "all", "last_real"), "every layer, last real token")):
        r = runs[key]
        rows.append(dict(what=f"Test accuracy, GPT from random weights, {what}", ours=pct(r, n), baseline=bag,
                         ratio=None, target=f"≥ {BOOK_RANDOM:.2%} ({book}/{n}), the book's GPT-2 from random "
                         "weights", passed=r["correct"] >= book))
    rows.append(dict(what="Test accuracy, last block, final norm, head, last real token, random start",
                     ours=f"{pct(runs['random', 'last_block', 'last_real'], n)}", baseline=bag, ratio=None,
                     target="", passed=None))
    rows.append(lora_row("random", runs["random", "lora", "last_real"], runs["random", "last_block", "last_real"], n))
    for way in ("all", "last_block"):
        rows.append(dict(what=f"Test accuracy, {WAYS[way]}, last real token, pretrained start",
                         ours=pct(runs["pretrained", way, "last_real"], n), baseline=bag, ratio=None,
                         target="", passed=None))
    rows.append(lora_row("pretrained", runs["pretrained", "lora", "last_real"],
                         runs["pretrained", "last_block", "last_real"], n))
    return rows


def cost_rows(timed: dict) -> list[dict]:
    "Per way: the faster time per epoch of its runs, the largest peak memory, the trainable parameters."
    rows = []
    for way, rs in timed.items():
        r = min(rs, key=lambda r: r["seconds"])
        peak, grown = max(r["peak_mb"] for r in rs), max(r["grown_mb"] for r in rs)
        rows.append(dict(what=f"Fine-tuning, {WAYS[way]}: time per epoch, peak memory (a process each, "
                         f"{len(rs)} runs)", ours=f"{r['seconds']:.2f} s per epoch, peak RSS {peak:.0f} MB "
                         f"(+{grown:.0f} MB while training), {share(r)}", baseline="", ratio=None, target="",
                         passed=None))
    return rows


def loop_rows(lp: dict) -> list[dict]:
    "`train` against the book's loop: with the book's work (no clipping), then with its default clipping."
    rows = []
    for key, how in (("library", "grad_clip=None, as the book's loop"), ("library_clip", "its default grad_clip=1.0")):
        ratio = lp["book"] / lp[key]
        rows.append(dict(what=f"One training epoch ({lp['steps']} steps, every layer, last real token), library "
                         f"`train`, {how}", ours=f"{lp[key]:.2f} s",
                         baseline=f"{lp['book']:.2f} s, the book's train_classifier_simple", ratio=round(ratio, 3),
                         target="≥ 1.0×", passed=ratio >= 1.0))
    return rows


def main(quick: bool) -> None:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    d = chapter_data(quick)
    n = len(d["sets"][2])
    test_ids = torch.stack([x for x, _ in d["sets"][2]])
    test_labels = torch.stack([y for _, y in d["sets"][2]])
    baseline = train_bag_of_tokens(d["train_dataset"], steps=5 if quick else 50)
    with torch.no_grad(): base = (baseline(test_ids)[:, -1].argmax(-1) == test_labels).float().mean().item()
    print(f"bag of tokens: {base:.2%} of {n} test messages", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre_path = Path(tmp) / "pretrained.pt"
        pre = pretrain(d, pre_path, quick)
        print(f"pretraining: {pre['steps']} steps, {pre['seconds']:.0f} s, {pre['epochs']:.1f} epochs of "
              f"{pre['texts']:,} texts; val loss {pre['val_loss']:.2f}", flush=True)
        starts = {"random": None, "pretrained": str(pre_path)}
        first = [("random", "all", "last"), ("random", "all", "last_real"), ("random", "last_block", "last_real"),
                 ("random", "lora", "last_real"), ("pretrained", "all", "last_real"),
                 ("pretrained", "last_block", "last_real"), ("pretrained", "lora", "last_real")]
        again = [] if quick else [k for k in first if k[2] == "last_real"][::-1]  # the second round, reversed
        runs, timed = {}, {w: [] for w in WAYS}
        for key in first + again:
            start, way, position = key
            if quick and start == "random": continue
            r = in_child(dict(kind="fine_tune", way=way, position=position, start=starts[start], quick=quick))
            if key in runs and runs[key]["correct"] != r["correct"]:
                print(f"  note: {key} gave {r['correct']} then {runs[key]['correct']}", flush=True)
            runs.setdefault(key, r)
            if position == "last_real": timed[way].append(r)
            print(f"{start:10} {WAYS[way]:28} {position:9} {r['accuracy']:.2%}  {r['seconds']:.2f} s/epoch  "
                  f"peak {r['peak_mb']:.0f} MB (+{r['grown_mb']:.0f})  {share(r)}", flush=True)
        lp = in_child(dict(kind="loops", reps=1 if quick else 7, quick=quick))
    runs_s = "; ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in lp["all"].items())
    print(f"one epoch: book {lp['book']:.2f} s, library {lp['library']:.2f} s ({lp['book'] / lp['library']:.2f}x), "
          f"with clipping {lp['library_clip']:.2f} s ({lp['book'] / lp['library_clip']:.2f}x); runs: {runs_s}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if quick: return
    rows = accuracy_rows(base, runs, n)
    rows.append(dict(what="Language-model pretraining of chapter 9's model (the pretrained start)",
                     ours=f"{pre['steps']} steps of 8 × 128 tokens, {pre['seconds']:.0f} s, validation loss "
                     f"{pre['val_loss']:.2f}", baseline="", ratio=None, target="", passed=None))
    rows += cost_rows(timed) + loop_rows(lp)
    results.record("classify", rows, notes=(
        f"{os.cpu_count()} CPUs, torch.set_num_threads(1), every fine-tuning in a process of its own; chapter 9's "
        f"data, model and recipe (2 epochs of the book's loop); pretrained start: the library's train, next "
        f"token, on the {pre['texts']:,} SMS texts that are not validation or test texts ({pre['tokens']:,} "
        f"tokens, {pre['epochs']:.1f} epochs); the book's pretrained GPT-2 figures: 95.67 % (chapter 6, last "
        f"block), 96.67 % with LoRA (repository notebook, alpha / rank), 97.33 % (printed book, alpha alone); "
        f"one epoch, seconds: {runs_s}"))
    print("recorded in benchmarks/results.json: run `python tools/readme.py` to update the README's table")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test on a few messages; nothing recorded")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child: child(json.loads(args.child))
    else: main(args.quick)
