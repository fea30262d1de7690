"""Benchmarks for tiny_gpt.model: a training step, KV-cache generation and the memory of GPT-2 small.

Reproduce:  python benchmarks/bench_model.py            (full run, records its rows in benchmarks/results.json)
            python benchmarks/bench_model.py --quick    (small shapes, a smoke test: nothing recorded)

Targets (every baseline runs in the same invocation, repeats interleaved, medians compared):
- training step (forward, backward, fused AdamW for both models) in nanoGPT's CPU configuration
  (vocabulary 65, context 64, 4 layers, 4 heads, 128 dims, batch 12), eager: tokens/s >= 1.0x transformers.GPT2LMHeadModel of the
  identical configuration (GPT-2's layout: biases, tied head), and model-FLOPs utilisation >= 45 % by
  nanoGPT's estimate_mfu (6N + 12*L*H*Q*T FLOPs per token, N without position embeddings) against the
  float32 matrix-multiply rate (2048^2) measured in the same interleaved rounds; the same two rows with both models
  compiled (torch.compile): the MFU against the same target, the tokens/s ratio without one (compiled, both models
  become much the same kernels: the ratio measures the compiler, not tiny_gpt);
- greedy generation of 200 tokens after a 64-token prompt, GPT-2 small's shape, random weights (the
  same in both models): KV cache >= 5x the uncached loop, and >= 1.0x transformers' generate(do_sample=False);
  identical tokens;
- memory of GPT-2 small: parameter bytes (float32, tied and untied) and the resident size a loaded model
  adds to a fresh process (Linux /proc).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tiny_gpt from this checkout
sys.path.insert(0, str(HERE.parent))      # results.py

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402  (a benchmark extra, as in the tests)
from transformers.utils import logging as hf_logging  # noqa: E402

from tiny_gpt.model import GPTModel, generate, gpt2_config_from_hf, load_gpt2_weights  # noqa: E402

ROWS: list[dict] = []
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


def row(what, ours, baseline, ratio, target, passed):
    ROWS.append(dict(what=what, ours=ours, baseline=baseline, ratio=None if ratio is None else round(ratio, 3),
                     target=target, passed=passed))
    verdict = "" if passed is None else ("PASS" if passed else "FAIL")
    print(f"  {what:<58} {ours:>18}  {baseline:>34}  {'' if ratio is None else f'{ratio:6.2f}x':>7}  {target:>8} {verdict}")


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    "Seconds of each function, run in turn `repeats` times (one round: every function once)."
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- training step
def hf_config(vocab, ctx, layers, heads, dim) -> GPT2Config:
    return GPT2Config(vocab_size=vocab, n_positions=ctx, n_layer=layers, n_head=heads, n_embd=dim, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")


def train_step_fn(model, logits_of, x, y):
    """One forward, backward and AdamW step; the loss and the optimizer (torch's fused AdamW, which
    tiny_gpt's make_adamw picks on the CPU) are the same for both models."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    def step():
        logits = logits_of(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_train(quick: bool, compiled: bool = False) -> None:
    "The training step of both models, eager or both compiled (torch.compile of the loss: fused elementwise kernels)."
    vocab, ctx, layers, heads, dim, batch = 65, 64, 4, 4, 128, 12
    steps, repeats = (5, 3) if quick else (30, 7)
    how = "compiled" if compiled else "eager"
    print(f"Training step, {how}, fused AdamW, vocab {vocab}, context {ctx}, {layers} layers, {heads} heads, "
          f"{dim} dims, batch {batch}: {repeats} interleaved repeats of {steps} steps")
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(hf_config(vocab, ctx, layers, heads, dim)).train()
    ours = load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), hf.state_dict()).train()
    x = torch.randint(0, vocab, (batch, ctx))
    y = torch.randint(0, vocab, (batch, ctx))
    ours_fwd, hf_fwd = (torch.compile(ours), torch.compile(hf)) if compiled else (ours, hf)
    ours_step = train_step_fn(ours, ours_fwd, x, y)
    hf_step = train_step_fn(hf, lambda ids: hf_fwd(input_ids=ids).logits, x, y)
    for _ in range(3): ours_step(); hf_step()  # warm-up: allocator, AdamW state (and compilation)
    a, b, n_mm = torch.randn(2048, 2048), torch.randn(2048, 2048), 3  # the peak, measured between the steps
    times = interleaved({"ours": lambda: [ours_step() for _ in range(steps)],
                         "hf": lambda: [hf_step() for _ in range(steps)],
                         "peak": lambda: [a @ b for _ in range(n_mm)]}, repeats)
    peak = n_mm * 2 * 2048**3 / statistics.median(times["peak"])
    tokens = steps * batch * ctx
    ours_tps, hf_tps = tokens / statistics.median(times["ours"]), tokens / statistics.median(times["hf"])
    n = sum(p.numel() for p in ours.parameters()) - ours.emb.pos_emb.weight.numel()  # nanoGPT's get_num_params
    flops_per_token = 6 * n + 12 * layers * heads * (dim // heads) * ctx
    mfu = ours_tps * flops_per_token / peak
    target, passed = ("", None) if compiled else ("≥ 1.0×", ours_tps >= hf_tps)  # compiled: the same kernels
    row(f"Training step tokens/s (nanoGPT CPU shape, {how})", f"{ours_tps:,.0f} tok/s",
        f"{hf_tps:,.0f} tok/s, transformers GPT2LMHeadModel", ours_tps / hf_tps, target, passed)
    row("Training step MFU (nanoGPT estimate_mfu)" + (", compiled" if compiled else ""), f"{100 * mfu:.1f} %",
        f"{peak / 1e9:.0f} GFLOP/s float32 matmul 2048²", None, "≥ 45 %", mfu >= 0.45)


# ---------------------------------------------------------------- generation
def bench_generate(quick: bool) -> None:
    prompt_len, new, layers, repeats = (16, 24, 2, 3) if quick else (64, 200, 12, 3)
    print(f"Greedy generation, GPT-2 small's width, {layers} layers, {prompt_len}-token prompt, {new} new tokens: "
          f"{repeats} interleaved repeats")
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=layers)).eval()
    ours = load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), hf.state_dict()).eval()
    prompt = torch.randint(0, 50257, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    out = {}
    def run(name, fn): return lambda: out.__setitem__(name, fn())
    fns = {"cached": run("cached", lambda: generate(ours, prompt, new, 1024)),
           "uncached": run("uncached", lambda: generate(ours, prompt, new, 1024, use_cache=False)),
           "hf": run("hf", lambda: hf.generate(prompt, max_new_tokens=new, do_sample=False, pad_token_id=0,
                                               eos_token_id=None))}
    with torch.no_grad():
        fns["cached"](); fns["hf"]()  # warm-up
        times = {k: statistics.median(v) for k, v in interleaved(fns, repeats).items()}
    same = torch.equal(out["cached"], out["uncached"]) and torch.equal(out["cached"], out["hf"])
    tps = {k: new / t for k, t in times.items()}
    row("Generation tokens/s, KV cache vs uncached loop", f"{tps['cached']:,.1f} tok/s",
        f"{tps['uncached']:,.1f} tok/s, uncached (book's loop)", tps["cached"] / tps["uncached"], "≥ 5×",
        tps["cached"] >= 5 * tps["uncached"] and same)
    row("Generation tokens/s, KV cache vs transformers generate", f"{tps['cached']:,.1f} tok/s",
        f"{tps['hf']:,.1f} tok/s, transformers generate", tps["cached"] / tps["hf"], "≥ 1.0×",
        tps["cached"] >= tps["hf"] and same)
    print(f"  identical greedy tokens (cached, uncached, transformers): {same}")


# ---------------------------------------------------------------- memory
_RSS_CHILD = r"""
import sys, torch
sys.path.insert(0, {root!r})
from tiny_gpt.model import GPTModel, gpt2_preset, load_gpt2_weights
def rss(): return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) * 1024
before = rss()
model = load_gpt2_weights(GPTModel(gpt2_preset("gpt2")), {folder!r})
import gc; gc.collect()
print(rss() - before)
"""


def bench_memory(quick: bool) -> None:
    print("Memory of GPT-2 small (float32)")
    with torch.device("meta"):
        tied = sum(p.numel() for p in GPTModel({**gpt2_preset_dict(), "tie_embeddings": True}).parameters())
        untied = sum(p.numel() for p in GPTModel({**gpt2_preset_dict(), "tie_embeddings": False}).parameters())
    row("GPT-2 small parameters, tied head (float32)", f"{tied * 4 / 2**20:,.0f} MiB", f"{tied:,} parameters",
        None, "", None)
    row("GPT-2 small parameters, head untied (float32)", f"{untied * 4 / 2**20:,.0f} MiB", f"{untied:,} parameters",
        None, "", None)
    if quick or not Path("/proc/self/status").exists():
        print("  (resident size skipped: --quick, or no /proc)"); return
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp)
        code = _RSS_CHILD.format(root=str(HERE.parents[1]), folder=tmp)
        grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    row("GPT-2 small loaded from safetensors: resident size added", f"{grown / 2**20:,.0f} MiB",
        f"{tied * 4 / 2**20:,.0f} MiB of parameters", grown / (tied * 4), "", None)


def gpt2_preset_dict() -> dict:
    from dataclasses import asdict
    from tiny_gpt.model import gpt2_preset
    return asdict(gpt2_preset("gpt2"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes and few repeats; nothing recorded")
    ap.add_argument("--only", choices=["train", "generate", "memory"], help="run one part")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "train"): bench_train(args.quick); bench_train(args.quick, compiled=True)
    if args.only in (None, "generate"): bench_generate(args.quick)
    if args.only in (None, "memory"): bench_memory(args.quick)
    from results import ROW_KEYS, record
    assert all(set(r) == set(ROW_KEYS) for r in ROWS)
    if args.quick or args.only: print("(rows not recorded: --quick/--only run)")
    else: record("model", ROWS, notes="medians of interleaved repeats; timings vary ±15 % on a shared machine")
    if args.quick:
        print("(--quick: shapes too small for the targets, so the verdicts above are a smoke test only)")
        return 0
    return 0 if all(r["passed"] is not False for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
