"""GPU benchmarks: a GPT-2 124M training step and nanoGPT's shakespeare_char recipe, against transformers.

Reproduce, on a machine with an NVIDIA GPU (CI never runs this; without a GPU it refuses in one line):
    python benchmarks/bench_gpu.py --out gpu.json             # the GPT-2 124M step
    python benchmarks/bench_gpu.py --out gpu.json --recipe    # and the shakespeare_char recipe (TINY_GPT_DATA)
    python benchmarks/results.py --merge gpu.json             # into results.json, with the GPU's name

How it measures (so that two people get the same number):
- A step is forward, loss, backward, clipping at 1.0, fused AdamW's step and zero_grad(set_to_none=True), on
  synthetic ids already on the GPU, under bfloat16 autocast, the model torch.compile-d. GPT-2 124M: 12 layers,
  768 dims, 12 heads, context 1024, vocabulary 50,304, no dropout, no biases, tied head; batch 16.
- 10 warm-up steps (compilation happens there), then 30 timed steps between torch.cuda.synchronize() calls;
  3 repeats interleaved with the baseline, transformers' GPT2LMHeadModel (sdpa attention, compiled) of the same
  shape; medians. Peak memory: torch.cuda.max_memory_allocated(), reset after the warm-up.
- MFU by nanoGPT's estimate_mfu: (6N + 12*L*H*Q*T) FLOPs per token, N the parameters without the position
  table, against the GPU's dense bfloat16 peak (PEAK_TFLOPS; --peak-tflops for a GPU not listed).
- The recipe: nanoGPT's config/train_shakespeare_char.py (6 layers, 384 dims, 6 heads, context 256, batch 64,
  dropout 0.2, 5,000 steps, lr 1e-3 -> 1e-4, beta2 0.99, warmup 100, clipping 1.0, compiled, bfloat16),
  evaluating every 250 steps on 200 batches, run by tiny_gpt's `train` for both models: seconds including
  compilation, and the best validation loss.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tiny_gpt from this checkout
sys.path.insert(0, str(HERE.parent))      # results.py

PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "A100": 312.0}  # dense bf16
GPT2_124M = dict(vocab_size=50304, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.0,
                 qkv_bias=False, bias=False, tie_embeddings=True)
TARGETS = {"mfu": 0.50, "speedup": 1.3, "memory_gib": 11.0, "recipe_s": 60.0, "recipe_loss": 1.47}


def refuse(message: str) -> None:
    print(f"bench_gpu: {message}", file=sys.stderr)
    raise SystemExit(2)


def peak_flops(name: str, given: float | None) -> float:
    "The GPU's dense bfloat16 peak in FLOP/s: --peak-tflops, else the table; refuse a GPU it does not know."
    if given: return given * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key in name: return tflops * 1e12
    refuse(f"no bfloat16 peak known for '{name}': pass --peak-tflops (its dense bf16 TFLOP/s)")


class HFLogits(nn.Module):
    "transformers' GPT2LMHeadModel as an ids -> logits module, like tiny_gpt's GPTModel."
    def __init__(self, cfg: dict, dropout: float = 0.0):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        self.hf = GPT2LMHeadModel(GPT2Config(
            vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
            n_layer=cfg["n_layers"], n_head=cfg["n_heads"], resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, attn_implementation="sdpa"))

    def forward(self, ids): return self.hf(input_ids=ids).logits


def step_fn(model: nn.Module, batch: int, cfg: dict):
    "One training step of `model` (compiled) on fixed synthetic ids on the GPU."
    compiled = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    x = torch.randint(0, cfg["vocab_size"], (batch, cfg["context_length"]), device="cuda")
    y = torch.randint(0, cfg["vocab_size"], (batch, cfg["context_length"]), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16): logits = compiled(x)
        F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def timed(step, n: int) -> tuple[float, float]:
    "(seconds of n steps between synchronisations, peak GiB allocated during them)."
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(n): step()
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def bench_step(peak: float, batch: int = 16, warmup: int = 10, steps: int = 30, repeats: int = 3) -> list[dict]:
    from tiny_gpt.model import GPTModel
    cfg, rows = GPT2_124M, []
    torch.manual_seed(0)
    models = {"ours": GPTModel(cfg).cuda(), "transformers": HFLogits(cfg).cuda()}
    fns = {name: step_fn(m, batch, cfg) for name, m in models.items()}
    for fn in fns.values():
        for _ in range(warmup): fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items(): runs[name].append(timed(fn, steps))
    ours = models["ours"]
    n = sum(p.numel() for p in ours.parameters()) - ours.emb.pos_emb.weight.numel()
    L, H, T = cfg["n_layers"], cfg["n_heads"], cfg["context_length"]
    flops_per_token = 6 * n + 12 * L * H * (cfg["emb_dim"] // H) * T
    tok_s = {k: batch * T * steps / statistics.median(s for s, _ in v) for k, v in runs.items()}
    mfu = {k: v * flops_per_token / peak for k, v in tok_s.items()}
    mem = {k: max(m for _, m in v) for k, v in runs.items()}
    ms = {k: 1000 * batch * T / v for k, v in tok_s.items()}
    rows.append(row("GPT-2 124M step (batch 16, bf16, compiled): MFU", f"{100 * mfu['ours']:.1f} %",
                    f"{100 * mfu['transformers']:.1f} %, transformers", None, f"≥ {100 * TARGETS['mfu']:.0f} %",
                    mfu["ours"] >= TARGETS["mfu"]))
    speedup = tok_s["ours"] / tok_s["transformers"]
    rows.append(row("GPT-2 124M step: ms / step", f"{ms['ours']:.1f} ms", f"{ms['transformers']:.1f} ms, transformers",
                    speedup, f"≥ {TARGETS['speedup']}×", speedup >= TARGETS["speedup"]))
    rows.append(row("GPT-2 124M step: peak memory", f"{mem['ours']:.1f} GiB", f"{mem['transformers']:.1f} GiB, transformers",
                    None, f"≤ {TARGETS['memory_gib']:.0f} GiB", mem["ours"] <= TARGETS["memory_gib"]))
    return rows


def recipe_run(model: nn.Module, train_ids, val_ids) -> tuple[float, float]:
    "(seconds including compilation, best validation loss) of the shakespeare_char recipe."
    from tiny_gpt.data import tiny_data_loader
    from tiny_gpt.train import train
    kw = dict(batch_size=64, max_length=256, stride=256, seed=1337)
    tr = tiny_data_loader(train_ids, sampling="random", num_batches=5000, pin_memory=True, **kw)
    va = tiny_data_loader(val_ids, sampling="random", num_batches=200, pin_memory=True, **kw)
    start = time.perf_counter()
    history = train(model, tr, va, device="cuda", compile=True, progress=False, max_steps=5000, lr=1e-3,
                    min_lr=1e-4, warmup_steps=100, betas=(0.9, 0.99), eval_interval=250, eval_iters=200,
                    log_interval=250)
    torch.cuda.synchronize()
    return time.perf_counter() - start, min(history["eval"]["val_loss"])


def bench_recipe() -> list[dict]:
    from tiny_gpt.io import corpus_path
    from tiny_gpt.model import GPTModel
    from tiny_gpt.tokenizers import CharTokenizer
    text = corpus_path("tinyshakespeare.txt").read_text(encoding="utf-8")
    chars = CharTokenizer(text)
    ids = torch.tensor(chars.encode(text))
    n = int(0.9 * len(ids))
    cfg = dict(vocab_size=chars.get_n_vocab_tokens(), context_length=256, emb_dim=384, n_heads=6, n_layers=6,
               drop_rate=0.2, qkv_bias=False, bias=False, tie_embeddings=True)
    torch.manual_seed(1337)
    ours_s, ours_loss = recipe_run(GPTModel(cfg), ids[:n], ids[n:])
    torch.manual_seed(1337)
    hf_s, hf_loss = recipe_run(HFLogits(cfg, dropout=0.2), ids[:n], ids[n:])
    return [row("shakespeare_char recipe, 5,000 steps incl. compilation", f"{ours_s:.1f} s",
                f"{hf_s:.1f} s, transformers", hf_s / ours_s, f"≤ {TARGETS['recipe_s']:.0f} s",
                ours_s <= TARGETS["recipe_s"]),
            row("shakespeare_char recipe, best validation loss", f"{ours_loss:.4f}", f"{hf_loss:.4f}, transformers",
                None, f"≤ {TARGETS['recipe_loss']}, within 0.01",
                ours_loss <= TARGETS["recipe_loss"] and abs(ours_loss - hf_loss) <= 0.01)]


def row(what, ours, baseline, ratio, target, passed) -> dict:
    r = dict(what=what, ours=ours, baseline=baseline, ratio=None if ratio is None else round(ratio, 3),
             target=target, passed=passed)
    print(f"  {what:<56} {ours:>12}  {baseline:>32}  {target:>16} {'PASS' if passed else 'FAIL'}")
    return r


def record_not_measured(why: str) -> None:
    "The GPU targets in results.json as rows not measured (the README's table then says so), and why."
    import results
    targets = [("GPT-2 124M step (batch 16, bf16, compiled): MFU", f"≥ {100 * TARGETS['mfu']:.0f} %"),
               ("GPT-2 124M step: ms / step", f"≥ {TARGETS['speedup']}× transformers"),
               ("GPT-2 124M step: peak memory", f"≤ {TARGETS['memory_gib']:.0f} GiB"),
               ("shakespeare_char recipe, 5,000 steps incl. compilation", f"≤ {TARGETS['recipe_s']:.0f} s"),
               ("shakespeare_char recipe, best validation loss", f"≤ {TARGETS['recipe_loss']}, within 0.01")]
    rows = [dict(what=w, ours="not measured", baseline="", ratio=None, target=t, passed=None) for w, t in targets]
    results.record("gpu", rows, command="python benchmarks/bench_gpu.py --out gpu.json --recipe", notes=why)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="the JSON file the rows are written to")
    p.add_argument("--recipe", action="store_true", help="also run the shakespeare_char recipe (minutes)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of a GPU not in PEAK_TFLOPS")
    p.add_argument("--not-measured", metavar="WHY", help="record the targets as not measured, and why")
    args = p.parse_args()
    if args.not_measured: return record_not_measured(args.not_measured)
    if not torch.cuda.is_available(): refuse("needs a CUDA GPU, and torch sees none: run it on a GPU machine")
    if not args.out: refuse("--out FILE is required: the rows are written there, then merged by results.py")
    name = torch.cuda.get_device_name()
    peak = peak_flops(name, args.peak_tflops)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(f"{name}, torch {torch.__version__}, bf16 peak {peak / 1e12:.0f} TFLOP/s")
    rows = bench_step(peak) + (bench_recipe() if args.recipe else [])
    import results
    machine = {**results.machine(), "gpu": name, "peak_tflops": peak / 1e12}
    out = {"machine": machine, "command": results.default_command(), "rows": rows,
           "notes": "medians of 3 interleaved repeats of 30 steps; baseline: transformers GPT2LMHeadModel"}
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: merge it with `python benchmarks/results.py --merge {args.out}`")


if __name__ == "__main__":
    main()
