"""Benchmark for chapter 10's responses: the 110 test entries answered in batches with the KV cache,
against the book's loop (one entry at a time, the whole window through the model for every token).

Reproduce:  python benchmarks/bench_generate.py           (full run, records its row in benchmarks/results.json)
            python benchmarks/bench_generate.py --untrained  (the worst case, below: printed only)
            python benchmarks/bench_generate.py --quick   (10 entries, 32 tokens: a smoke test, nothing recorded)

The model: chapter 10's small model of its own (its SubsetTokenizer's 3,723 tokens, context 128, 64 dims,
4 heads, 2 layers, tied head), trained here with chapter 10's recipe (the book's loop, 2 epochs, its
seeds, loaders and learning rate), so that its answers end with end-of-text as the chapter's do. The
chapter draws more random numbers before training, so its batches come in another order: a model like
the chapter's, not the very same weights. One thread, as chapter
10 runs. Target: batched and cached >= 5x the book's loop, with the same greedy tokens for every entry
(where a token differs, the two best logits of the book's step were within 1e-4).
--untrained: the same shape with seeded starting weights, never trained: no answer ends before 256
tokens, the window slides for most of them, and a slid window must be recomputed whole (learned
positions), so the cache helps little there: the worst case (measured 3.8x), printed, not recorded.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tiny_gpt from this checkout
sys.path.insert(0, str(HERE.parent))      # results.py

from tiny_gpt.instruct import (InstructionDataset, SubsetTokenizer, custom_collate_fn,  # noqa: E402
                               download_and_load_file, format_input,
                               instruction_data_path, INSTRUCTION_DATA_URL, response_ids_batched)
from tiny_gpt.model import GPTModel, init_gpt2_weights  # noqa: E402
from tiny_gpt.train import train_model_simple  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from functools import partial  # noqa: E402
import contextlib, io  # noqa: E402,E401
from tiny_gpt.tokenizers import TikTokenizer  # noqa: E402

import results  # noqa: E402


def book_generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    "The book's chapter-5 `generate` (greedy path as written there): the whole window every token, no cache."
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def book_responses(model, entries, tokenizer, max_new_tokens, context_size):
    "The book's chapter-7 loop: one entry at a time; the new token ids of each."
    out = []
    for entry in entries:
        idx = torch.tensor([tokenizer.encode(format_input(entry))])
        ids = book_generate(model, idx, max_new_tokens, context_size, eos_id=tokenizer.eot_token)
        out.append(ids[0, idx.shape[1]:].tolist())
    return out


def same_or_tied(model, prompt, alone, batched, context_size, tol=1e-4) -> bool:
    "`batched` is `alone`, or first differs at a step where the two best logits of `alone` were within `tol`."
    k = next((i for i, (a, b) in enumerate(zip(alone, batched)) if a != b), None)
    if k is None: return len(alone) == len(batched)
    ids = torch.tensor([(prompt + alone[:k])[-context_size:]])
    with torch.no_grad(): best = model(ids)[0, -1].topk(2).values
    return bool(best[0] - best[1] < tol)


def chapter_model(data, tokenizer, trained: bool) -> GPTModel:
    "Chapter 10's small model: its config, seeds, loaders and recipe (the book's loop, 2 epochs)."
    n_train, n_test = int(len(data) * 0.85), int(len(data) * 0.1)
    train_data, val_data = data[:n_train], data[n_train + n_test:]
    collate = partial(custom_collate_fn, pad_token_id=tokenizer.eot_token, device="cpu", allowed_max_length=128)
    def loaders():
        torch.manual_seed(123)
        train = DataLoader(InstructionDataset(train_data, tokenizer), batch_size=8, collate_fn=collate,
                           shuffle=True, drop_last=True)
        return train, DataLoader(InstructionDataset(val_data, tokenizer), batch_size=8, collate_fn=collate)
    cfg = {"vocab_size": tokenizer.get_n_vocab_tokens(), "context_length": 128, "emb_dim": 64, "n_heads": 4,
           "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False, "tie_embeddings": True}
    train_loader, val_loader = loaders()
    torch.manual_seed(123)
    model = init_gpt2_weights(GPTModel(cfg))
    if trained:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.005, weight_decay=0.1)
        with contextlib.redirect_stdout(io.StringIO()):
            train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=29,
                               eval_iter=2, start_context=format_input(val_data[0]), tokenizer=tokenizer)
    return model.eval()


def main(quick: bool, untrained: bool = False) -> None:
    torch.set_num_threads(1)
    data = download_and_load_file(instruction_data_path(), INSTRUCTION_DATA_URL)
    test_data = data[int(len(data) * 0.85):int(len(data) * 0.85) + int(len(data) * 0.1)]  # the book's split
    texts = [format_input(e) + f"\n\n### Response:\n{e['output']}" for e in data]
    tokenizer = SubsetTokenizer(texts, TikTokenizer("gpt2"))
    model = chapter_model(data, tokenizer, trained=not (quick or untrained))
    entries, new = (test_data[:10], 32) if quick else (test_data, 256)
    kind = "untrained" if (quick or untrained) else "trained with chapter 10's recipe"
    print(f"{len(entries)} test entries, up to {new} new tokens each, greedy, one thread, model {kind}")
    start = time.perf_counter()
    prompts = [tokenizer.encode(format_input(e)) for e in entries]
    ours = response_ids_batched(model, prompts, tokenizer.eot_token, new)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    book = book_responses(model, entries, tokenizer, new, model.cfg.context_length)
    book_s = time.perf_counter() - start
    checks = [same_or_tied(model, p, a, b, model.cfg.context_length) for p, a, b in zip(prompts, book, ours)]
    identical = sum(a == b for a, b in zip(book, ours))
    ratio = book_s / ours_s
    passed = ratio >= 5 and all(checks)
    print(f"  batched + cached: {ours_s:.2f} s | book's loop: {book_s:.2f} s | {ratio:.1f}x (target >= 5x) "
          f"{'PASS' if passed else 'FAIL'}")
    print(f"  identical token lists: {identical} of {len(entries)}; the others differ only at 1e-4 ties: "
          f"{all(checks)}")
    if quick or untrained: return
    row = dict(what=f"Responses to the {len(entries)} test entries (chapter 10, {new} tokens), batched + cached",
               ours=f"{ours_s:.2f} s", baseline=f"{book_s:.2f} s, book's loop (one entry, no cache)",
               ratio=round(ratio, 3), target="≥ 5×", passed=passed)
    results.record("generate", [row], notes=f"{os.cpu_count()} CPUs, torch.set_num_threads(1); chapter 10's "
                   "small model, trained here with the chapter's recipe; identical token lists: "
                   f"{identical} of {len(entries)}")
    print("recorded in benchmarks/results.json: run `python tools/readme.py` to update the README's table")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 entries, 32 tokens; nothing recorded")
    parser.add_argument("--untrained", action="store_true", help="the worst case: untrained, 256 tokens each")
    args = parser.parse_args()
    main(args.quick, args.untrained)
