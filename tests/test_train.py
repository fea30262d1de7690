"""tiny_gpt.train: losses against hand computations, the schedule against nanoGPT's numbers, exact resume,
atomic checkpoints (a writer killed mid-save), loading that never runs code, the command line, and training
from a token store with the store's own tokenizer."""
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tiny_gpt.cli import BadInput, main as tiny_gpt_main
import torch
from torch import nn

from tiny_gpt.data import tiny_data_loader
from tiny_gpt.io import corpus_path
from tiny_gpt.train import (CHECKPOINT_NAME, CharTokenizer, TrainSettings, calc_loss_batch, calc_loss_loader,
                            cosine_lr, evaluate, load_checkpoint, make_adamw, save_checkpoint, tokenizer_from_info,
                            tokenizer_info)
from tiny_gpt.train import train as train_anywhere


def train(*args, **kw):
    "`train` on the CPU unless a test names another device: these tests compare with numbers computed on the CPU."
    return train_anywhere(*args, **{"device": "cpu", **kw})

VOCAB = 48


class TinyLM(nn.Module):
    "A stand-in language model: embeddings, dropout, a causal running mean, an MLP, a head. Any ids → logits module works."
    def __init__(self, vocab=VOCAB, dim=32, context=16, drop=0.1):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.drop, self.norm = nn.Dropout(drop), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, vocab, bias=False)
        self.cfg = {"vocab_size": vocab, "emb_dim": dim, "context_length": context, "drop_rate": drop}

    def forward(self, ids):                                       # (b, t)
        t = ids.shape[1]
        x = self.drop(self.tok(ids) + self.pos(torch.arange(t, device=ids.device)))  # (b, t, dim)
        x = x + x.cumsum(1) / torch.arange(1, t + 1, device=ids.device)[:, None]      # + a causal running mean
        return self.head(self.norm(x + self.mlp(x)))              # (b, t, vocab)


def token_ids(n=4000, seed=0):
    "A token stream with structure to learn: a noisy walk over the vocabulary."
    rng = np.random.default_rng(seed)
    return torch.from_numpy((np.cumsum(rng.integers(1, 4, n)) % VOCAB).astype(np.int64))


def loaders(workers=0, sampling="random", batch=4, seed=7, num_batches=5):
    ids = token_ids()
    train_ids, val_ids = ids[:3600], ids[3600:]
    kw = dict(batch_size=batch, max_length=16, stride=16, seed=seed, num_workers=workers)
    tr = tiny_data_loader(train_ids, sampling=sampling, num_batches=num_batches if sampling == "random" else None, **kw)
    va = tiny_data_loader(val_ids, shuffle=False, **kw)
    return tr, va


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyLM(**kw)


# ---------------------------------------------------------------- losses, schedule, optimizer
def test_calc_loss_batch_is_the_mean_negative_log_probability_of_the_targets():
    m = model(drop=0.0).eval()
    x, y = torch.randint(0, VOCAB, (3, 16)), torch.randint(0, VOCAB, (3, 16))
    with torch.no_grad(): probs = torch.softmax(m(x).double(), dim=-1)                       # by hand: softmax, pick, log, mean
    by_hand = -sum(math.log(probs[b, t, y[b, t]].item()) for b in range(3) for t in range(16)) / 48
    assert calc_loss_batch(x, y, m, "cpu").item() == pytest.approx(by_hand, abs=1e-5)


def test_calc_loss_loader_averages_the_first_batches():
    m, (tr, _) = model(drop=0.0).eval(), loaders(sampling="windows")
    batches = list(tr)[:3]
    with torch.no_grad(): expected = sum(calc_loss_batch(x, y, m, "cpu").item() for x, y in batches) / 3
    tr.batch_sampler.set_epoch(0)
    assert calc_loss_loader(tr, m, "cpu", num_batches=3) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(calc_loss_loader([], m, "cpu"))


def test_evaluate_uses_eval_mode_and_the_same_batches_every_time():
    m, (tr, va) = model(), loaders()
    first, second = evaluate(m, tr, va, "cpu", 3), evaluate(m, tr, va, "cpu", 3)
    assert first == second and m.training                             # dropout off inside, back on after


def test_sample_text_writes_in_eval_mode_and_leaves_the_mode_it_found():
    from tiny_gpt.model import GPTModel
    from tiny_gpt.train import sample_text
    tok = CharTokenizer("abcdefgh ")
    torch.manual_seed(0)
    m = GPTModel({"vocab_size": tok.get_n_vocab_tokens(), "context_length": 16, "emb_dim": 16, "n_heads": 2,
                  "n_layers": 1, "drop_rate": 0.5, "qkv_bias": False})
    for training in (True, False):
        m.train(training)
        texts = [sample_text(m, tok, "cpu", "abc", max_new_tokens=5) for _ in range(2)]
        assert m.training is training                      # the mode it was in
        assert texts[0] == texts[1] and len(texts[0]) == 8  # greedy with dropout off: the same text twice


def test_cosine_lr_matches_nanogpts_numbers():
    lr = lambda step: cosine_lr(step, 1e-3, 1e-4, 100, 2000)
    assert lr(0) == pytest.approx(1e-3 / 101) and lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3)
    assert lr(1050) == pytest.approx(5.5e-4)                           # half way down the cosine
    assert lr(2000) == lr(5000) == pytest.approx(1e-4)
    assert all(lr(s) >= lr(s + 1) for s in range(100, 2000))


def test_adamw_decays_matrices_only():
    m = model()
    opt = make_adamw(m, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {p.dim() for p in decayed["params"]} == {2} and {p.dim() for p in plain["params"]} == {1}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(m.parameters()))


def test_training_lowers_the_loss():
    (tr, va), m = loaders(sampling="windows"), model()
    before = evaluate(m, tr, va, "cpu", 5)[1]
    h = train(m, tr, va, max_steps=40, lr=1e-2, warmup_steps=5, eval_interval=20, eval_iters=5, progress=False)
    ev = h["eval"]
    assert ev["step"] == [20, 40] and ev["val_loss"][-1] < before - 1.0
    assert len(h["log"]["loss"]) == 4 and h["log"]["tokens_seen"][-1] == 40 * 4 * 16


def test_clipping_changes_the_update_only_above_the_limit():
    "Adam is almost scale-invariant, but gradients clipped to a norm of 1e-6 meet its eps (1e-8): smaller steps."
    def update(clip):
        (tr, _), m = loaders(), model(drop=0.0)
        before = [p.detach().clone() for p in m.parameters()]
        train(m, tr, None, max_steps=1, lr=1e-3, warmup_steps=0, weight_decay=0.0, grad_clip=clip, eval_iters=1,
              progress=False)
        return torch.cat([(p - b).flatten() for p, b in zip(m.parameters(), before)])
    free, loose, tight = update(None), update(1e9), update(1e-6)
    assert torch.equal(free, loose)                                   # a limit never reached changes nothing
    assert tight.abs().sum() < 0.9 * free.abs().sum()                 # a limit reached shrinks the step


# ---------------------------------------------------------------- exact resume
def run_to_end(tmp_path, stop_after=None, workers=2, sampling="random", accum=2, drop=0.1, max_steps=12):
    settings = TrainSettings(max_steps=max_steps, lr=3e-3, warmup_steps=5, grad_accum_steps=accum, eval_interval=4,
                             eval_iters=2, log_interval=1)
    tr, va = loaders(workers, sampling)
    m = model(drop=drop)
    h = train(m, tr, va, settings, out_dir=tmp_path, stop_after=stop_after, progress=False)
    if stop_after is not None:
        assert h["stopped_at"]["micro_batch"] == stop_after
        tr, va = loaders(workers, sampling, seed=999)                 # the checkpoint's data seed wins
        m = model(seed=1, drop=drop)                                   # the checkpoint's weights win
        h = train(m, tr, va, settings, out_dir=tmp_path, resume=True, progress=False)
    return h, m, load_checkpoint(tmp_path)


def assert_same_run(a, b):
    (ha, ma, ca), (hb, mb, cb) = a, b
    assert ha["log"]["loss"] == hb["log"]["loss"]                     # bitwise: == on floats
    for k in ("step", "train_loss", "val_loss", "tokens_seen", "lr"): assert ha["eval"][k] == hb["eval"][k]
    for (n, p), (_, q) in zip(ma.named_parameters(), mb.named_parameters()): assert torch.equal(p, q), n
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]: assert torch.equal(sa[i][k], sb[i][k]), (i, k)


@pytest.mark.parametrize("stop_after", [7, 10, 16], ids=["mid-accumulation+warmup", "mid-epoch", "after-eval"])
def test_resume_is_exact_with_dropout_random_offsets_and_two_workers(tmp_path, stop_after):
    straight = run_to_end(tmp_path / "straight")
    resumed = run_to_end(tmp_path / "resumed", stop_after=stop_after)
    assert_same_run(straight, resumed)
    assert straight[0]["log"]["step"] == list(range(1, 13))


def test_resume_is_exact_with_shuffled_windows_in_process(tmp_path):
    straight = run_to_end(tmp_path / "a", workers=0, sampling="windows", accum=3, max_steps=9)
    resumed = run_to_end(tmp_path / "b", stop_after=11, workers=0, sampling="windows", accum=3, max_steps=9)
    assert_same_run(straight, resumed)


def test_a_different_stop_changes_nothing_but_a_different_seed_does(tmp_path):
    "The exact-resume test can fail: another data seed gives other losses."
    a = run_to_end(tmp_path / "a", workers=0, max_steps=4)
    tr, va = loaders(0, seed=8)
    h = train(model(), tr, va, TrainSettings(max_steps=4, lr=3e-3, warmup_steps=5, grad_accum_steps=2,
                                            eval_interval=4, eval_iters=2, log_interval=1), progress=False)
    assert h["log"]["loss"] != a[0]["log"]["loss"]


# ---------------------------------------------------------------- checkpoints: refusals, atomicity, safety
def test_resume_refuses_another_config_or_tokenizer(tmp_path):
    tr, va = loaders()
    train(model(), tr, va, max_steps=2, eval_iters=1, out_dir=tmp_path, tokenizer=CharTokenizer("abc"), progress=False)
    with pytest.raises(ValueError, match=r"another model config \(emb_dim: 32 → 16"):
        train(model(dim=16), tr, va, max_steps=4, out_dir=tmp_path, resume=True, tokenizer=CharTokenizer("abc"))
    with pytest.raises(ValueError, match="another tokenizer"):
        train(model(), tr, va, max_steps=4, out_dir=tmp_path, resume=True, tokenizer=CharTokenizer("abd"))
    with pytest.raises(ValueError, match="holds another run"):
        train(model(), tr, va, max_steps=4, out_dir=tmp_path, progress=False)


WRITER = textwrap.dedent("""
    import io, sys, time, torch
    import tiny_gpt.train as t
    path = sys.argv[1]
    t.save_checkpoint(path, {"format": t.CHECKPOINT_FORMAT, "config": None, "tokenizer": None, "v": torch.ones(1000)})
    real_save = torch.save
    def slow_save(obj, f):                      # a save that is half written when the process dies
        buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush()
        print("half", flush=True); time.sleep(60)
    t.torch.save = slow_save
    t.save_checkpoint(path, {"format": t.CHECKPOINT_FORMAT, "config": None, "tokenizer": None, "v": torch.zeros(10**6)})
""")


def test_a_writer_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try: assert p.stdout.readline().strip() == "half"
    finally: p.send_signal(signal.SIGKILL); p.wait()
    stale = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0            # the half-written file is there...
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(1000))  # ...ignored: the previous one loads
    save_checkpoint(path, {"format": "tiny_gpt.checkpoint", "config": None, "tokenizer": None, "v": torch.ones(2)})
    assert not stale[0].exists() and load_checkpoint(path)["v"].shape == (2,)  # and cleaned by the next save


class Exploit:
    def __reduce__(self): return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_loading_never_runs_code_from_the_file(tmp_path):
    global MARKER
    MARKER = tmp_path / "pwned"
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"format": "tiny_gpt.checkpoint", "model": Exploit()}, path)  # a real torch file that runs a command
    with open(tmp_path / "plain.pkl", "wb") as f: pickle.dump(Exploit(), f)
    for bad in (path, tmp_path / "plain.pkl"):
        with pytest.raises(ValueError, match="not a checkpoint that loads without running code"): load_checkpoint(bad)
    assert not MARKER.exists()
    os.system(f"touch {MARKER}")                                       # the check can fail: the command does work
    assert MARKER.exists()


# ---------------------------------------------------------------- the command line
def cli_args(*argv):
    import argparse
    from tiny_gpt.cli import add_train_parser
    parser = argparse.ArgumentParser(prog="tiny-gpt")
    add_train_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


@pytest.fixture
def small_text(tmp_path):
    path = tmp_path / "verdict.txt"
    path.write_text(corpus_path("the-verdict.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


RUN = ["--tokenizer", "char", "--preset", "tiny", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "4",
       "--device", "cpu", "--quiet"]


def one_line_error(exc_type, *argv):
    from tiny_gpt.cli import run_train
    with pytest.raises(exc_type) as e: run_train(cli_args(*argv))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_cli_refuses_missing_data_and_empty_store(tmp_path):
    assert "no data at" in one_line_error(BadInput, str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    (tmp_path / "store").mkdir()
    assert "no token store header" in one_line_error(BadInput, str(tmp_path / "store"), "--out",
                                                     str(tmp_path / "o"))


def test_cli_refuses_a_config_smaller_than_the_vocabulary(tmp_path, small_text):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"vocab_size": 10, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1, '
                   '"drop_rate": 0.0, "qkv_bias": false}')
    msg = one_line_error(ValueError, str(small_text), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert "vocab_size is 10 but the tokenizer has 50257 ids" in msg


def test_cli_refuses_a_batch_larger_than_the_data(tmp_path, small_text):
    msg = one_line_error(ValueError, str(small_text), "--out", str(tmp_path / "o"), *RUN, "--batch-size", "1000")
    assert "fewer than batch_size=1000" in msg


def test_cli_refuses_a_folder_holding_another_run_and_keeps_its_checkpoint(tmp_path, small_text):
    from tiny_gpt.cli import run_train
    out = tmp_path / "run"
    assert run_train(cli_args(str(small_text), "--out", str(out), *RUN, "--max-steps", "2")) == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    assert "holds another run: pass --resume" in one_line_error(ValueError, str(small_text), "--out", str(out), *RUN)
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    assert "another model config" in one_line_error(ValueError, str(small_text), "--out", str(out), *RUN, "--resume",
                                                    "--preset", "shakespeare-char")


CLI_SCRIPT = textwrap.dedent("""
    import argparse, sys
    from tiny_gpt.cli import add_train_parser
    p = argparse.ArgumentParser(); add_train_parser(p.add_subparsers())
    args = p.parse_args(["train", *sys.argv[1:]])
    sys.exit(args.run(args))
""")


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, small_text):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", CLI_SCRIPT, str(small_text), "--out", str(out), *RUN]
    p = subprocess.Popen([*cmd, "--max-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / CHECKPOINT_NAME).exists() and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-2000:]
    assert "stopped at step" in stderr and "Traceback" not in stderr
    ckpt = load_checkpoint(out)
    step = ckpt["position"]["step"]
    assert ckpt["history"]["stopped_at"]["reason"] == "interrupted" and 2 <= step < 100000
    r = subprocess.run([*cmd, "--resume", "--max-steps", str(step + 3)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(out)["position"]["step"] == step + 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(load_checkpoint(out)["history"]["eval"]["step"]) >= 2


def test_the_command_line_prints_one_line_for_bad_input(tmp_path, small_text, capsys):
    "Through `tiny-gpt train`: exit 2 and one line, for each refusal above."
    out = str(tmp_path / "o")
    for argv in ([str(tmp_path / "nope"), "--out", out], [str(small_text), "--out", out, *RUN, "--batch-size", "1000"],
                 [str(small_text), "--out", out, *RUN, "--lr", "-1"]):
        assert tiny_gpt_main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tiny-gpt: error: ") and err.count("\n") == 1, err


def test_generate_writes_with_a_trained_checkpoint(tmp_path, small_text, capsys):
    "`tiny-gpt generate --checkpoint RUN` uses the run's model and tokenizer: the same text as generate()."
    from tiny_gpt.model import generate
    from tiny_gpt.train import model_from_checkpoint
    out = tmp_path / "run"
    assert tiny_gpt_main(["train", str(small_text), "--out", str(out), *RUN, "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert tiny_gpt_main(["generate", "--checkpoint", str(out), "--prompt", "I had", "--max-new-tokens", "8"]) == 0
    model, tok = model_from_checkpoint(out)
    expected = tok.decode(generate(model, torch.tensor([tok.encode("I had")]), 8, 64)[0].tolist())
    assert capsys.readouterr().out == expected + "\n" and expected.startswith("I had") and len(expected) == 13
    assert tiny_gpt_main(["generate", "--checkpoint", str(out), "--prompt", "I had", "--preset", "gpt2"]) == 2
    assert tiny_gpt_main(["generate", "--checkpoint", str(out), "--prompt", "€"]) == 2  # not in its characters
    assert tiny_gpt_main(["generate", "--checkpoint", str(tmp_path / "none"), "--prompt", "I"]) == 2


# ---------------------------------------------------------------- a token store's own tokenizer
TRAIN = ["--preset", "tiny", "--eval-interval", "3", "--eval-iters", "1", "--batch-size", "4", "--quiet"]


def test_cli_trains_and_generates_with_a_char_stores_tokenizer(tmp_path, small_text, capsys):
    "prepare --tokenizer char → train STORE → generate --checkpoint: a char model, writing the store's characters."
    store, out = tmp_path / "store", tmp_path / "run"
    assert tiny_gpt_main(["prepare", str(small_text), "--out", str(store), "--tokenizer", "char", "--val-fraction",
                          "0.1", "--quiet"]) == 0
    assert tiny_gpt_main(["train", str(store), "--out", str(out), *TRAIN, "--max-steps", "3"]) == 0
    chars = sorted(set(small_text.read_text(encoding="utf-8")))
    ckpt = load_checkpoint(out)
    assert ckpt["tokenizer"] == {"kind": "char", "chars": "".join(chars)} and ckpt["config"]["vocab_size"] == len(chars)
    capsys.readouterr()
    assert tiny_gpt_main(["generate", "--checkpoint", str(out), "--prompt", "I had", "--max-new-tokens", "20"]) == 0
    written = capsys.readouterr().out[:-1]  # print's newline
    assert written.startswith("I had") and len(written) == 5 + 20 and set(written) <= set(chars)


def test_cli_refuses_a_tokenizer_other_than_the_stores(tmp_path, small_text, capsys):
    store = tmp_path / "store"
    assert tiny_gpt_main(["prepare", str(small_text), "--out", str(store), "--tokenizer", "char", "--quiet"]) == 0
    assert tiny_gpt_main(["train", str(store), "--out", str(tmp_path / "o"), *TRAIN, "--tokenizer", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tokenizer gpt2 differs from the tokenizer of the store" in err, err
    assert not (tmp_path / "o").exists()
    assert tiny_gpt_main(["train", str(store), "--out", str(tmp_path / "o"), *TRAIN, "--tokenizer", "char",
                          "--max-steps", "1"]) == 0  # the store's own, named: accepted


def test_resume_refuses_data_of_another_tokenizer_and_keeps_the_checkpoint(tmp_path, small_text, capsys):
    other = tmp_path / "other.txt"
    other.write_text(small_text.read_text(encoding="utf-8").upper(), encoding="utf-8")  # other characters
    for text, name in ((small_text, "a"), (other, "b")):
        assert tiny_gpt_main(["prepare", str(text), "--out", str(tmp_path / name), "--tokenizer", "char",
                              "--quiet"]) == 0
    out = tmp_path / "run"
    assert tiny_gpt_main(["train", str(tmp_path / "a"), "--out", str(out), *TRAIN, "--max-steps", "2"]) == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    assert tiny_gpt_main(["train", str(tmp_path / "b"), "--out", str(out), *TRAIN, "--resume",
                          "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with another tokenizer than the data's (chars:" in err, err
    assert (out / CHECKPOINT_NAME).read_bytes() == before


def test_char_tokenizer_still_imports_from_train():
    import tiny_gpt.tokenizers
    import tiny_gpt.train
    assert tiny_gpt.train.CharTokenizer is tiny_gpt.tokenizers.CharTokenizer


def test_resuming_past_the_cosine_keeps_min_lr_and_says_so(tmp_path, small_text, capsys):
    "A resumed run keeps its schedule (exact resume); past the cosine's end the rate stays at min_lr, and a note says so."
    out = tmp_path / "run"
    base = ["train", str(small_text), "--out", str(out), *RUN[:-1], "--warmup-steps", "1", "--lr", "1e-3"]
    assert tiny_gpt_main([*base, "--max-steps", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert tiny_gpt_main([*base, "--max-steps", "6", "--resume"]) == 0
    assert "stays at 0.0001 (min_lr) after step 4" in capsys.readouterr().err
    assert tiny_gpt_main([*base, "--max-steps", "8", "--decay-steps", "12", "--resume"]) == 0
    assert "note:" not in capsys.readouterr().err
    lr = {m["step"]: m["lr"] for m in map(json.loads, (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines())}
    assert lr[6] == pytest.approx(1e-4) and lr[8] > 1.5e-4  # the stretched cosine rises again after step 6


def test_resuming_a_text_run_refuses_another_tokenizer_or_new_characters(tmp_path, small_text, capsys):
    "Resuming on a text file: the run's tokenizer is used; a different --tokenizer, or a character it lacks, is one line."
    out = tmp_path / "run"
    assert tiny_gpt_main(["train", str(small_text), "--out", str(out), *RUN, "--max-steps", "2"]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    other = tmp_path / "other.txt"
    other.write_text(small_text.read_text(encoding="utf-8") + " €", encoding="utf-8")
    resume = ["train", "--out", str(out), *RUN[2:], "--max-steps", "4", "--resume"]
    assert tiny_gpt_main([resume[0], str(small_text), *resume[1:], "--tokenizer", "gpt2"]) == 2
    assert tiny_gpt_main([resume[0], str(other), *resume[1:]]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "--tokenizer gpt2 differs from the run's tokenizer (char)" in errors[0]
    assert "cannot be tokenized with the run's tokenizer" in errors[1] and "'€'" in errors[1]
    assert (out / "checkpoint.pt").read_bytes() == before



# ---------------------------------------------------------------- devices
@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter:UserWarning")  # meta weights hold no values
def test_resume_loads_the_checkpoint_on_the_cpu_and_moves_it_to_the_runs_device(tmp_path):
    "A run on another device than the CPU (meta here; CUDA on a GPU) resumes: RNG states stay CPU tensors."
    tr, va = loaders()
    train(model(), tr, va, max_steps=2, eval_interval=1, eval_iters=1, out_dir=tmp_path, progress=False)
    history = train_anywhere(model(), tr, va, max_steps=2, eval_interval=1, eval_iters=1, out_dir=tmp_path,
                             resume=True, device="meta", progress=False)
    assert history["eval"]["step"] == [1, 2]  # nothing left to do: the checkpoint's history, restored


def test_a_device_that_does_not_exist_is_one_line(monkeypatch):
    "train(device='cuda') without CUDA, and more torchrun processes than GPUs, say what to pass instead."
    tr, va = loaders()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInput, match="device 'cuda': there is no CUDA device .*: use 'cpu'"):
        train_anywhere(model(), tr, va, max_steps=1, device="cuda", progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BadInput, match="device 'cuda:7': there are 1 CUDA GPU"):
        train_anywhere(model(), tr, va, max_steps=1, device="cuda:7", progress=False)
    from tiny_gpt.train import _run_device
    monkeypatch.setenv("LOCAL_RANK", "1"); monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(BadInput, match=r"torchrun started 2 processes on a machine with 1 CUDA GPU\(s\)"):
        _run_device(None, 2)
    assert _run_device("cpu", 2) == torch.device("cpu")


def test_the_command_line_refuses_a_missing_gpu_and_too_many_processes_in_one_line(tmp_path, small_text, capsys,
                                                                                 monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tiny_gpt_main(["train", str(small_text), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiny-gpt: error: --device 'cuda': there is no CUDA device") and err.count("\n") == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for k, v in dict(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2").items(): monkeypatch.setenv(k, v)
    assert tiny_gpt_main(["train", str(small_text), "--out", str(tmp_path / "o")]) == 2  # before any process group
    err = capsys.readouterr().err
    assert "torchrun started 2 processes on a machine with 1 CUDA GPU(s): start at most 1" in err
    assert "--device cpu" in err and err.count("\n") == 1


def test_float16_with_a_gradient_scaler_resumes_exactly(tmp_path):
    "The laptop-GPU path (float16 + GradScaler) on the CPU: the scaler's state is saved, and resume is bitwise."
    tr, va = loaders()
    kw = dict(max_steps=6, eval_interval=3, eval_iters=1, log_interval=1, amp="float16", progress=False)
    straight = train(model(), tr, va, out_dir=tmp_path / "a", **kw)
    train(model(), tr, va, out_dir=tmp_path / "b", stop_after=3, **kw)
    resumed = train(model(), tr, va, out_dir=tmp_path / "b", resume=True, **kw)
    assert straight["log"]["loss"] == resumed["log"]["loss"]
    assert load_checkpoint(tmp_path / "b")["scaler"]["scale"] > 1


def test_bf16_is_chosen_only_where_the_gpu_has_it(monkeypatch):
    from tiny_gpt.train import _amp_dtype
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert _amp_dtype(cuda, None) == _amp_dtype(cuda, True) == torch.float16      # a GTX 10xx, an RTX 20xx
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert _amp_dtype(cuda, None) == torch.bfloat16 and _amp_dtype(cuda, False) is None
    assert _amp_dtype(torch.device("cpu"), None) is None and _amp_dtype(torch.device("cpu"), True) == torch.bfloat16


def test_the_command_line_refuses_a_binary_file_and_a_config_with_missing_keys(tmp_path, small_text, capsys):
    (tmp_path / "some.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "half.json").write_text('{"emb_dim": 32, "n_heads": 2, "layer": 1}', encoding="utf-8")
    runs = {"binary": ["train", str(tmp_path / "some.bin"), "--out", str(tmp_path / "a")],
            "config": ["train", str(small_text), "--out", str(tmp_path / "b"), "--config", str(tmp_path / "half.json")]}
    errors = {}
    for name, argv in runs.items():
        assert tiny_gpt_main(argv) == 2, name
        errors[name] = capsys.readouterr().err
        assert errors[name].count("\n") == 1 and "Traceback" not in errors[name]
    assert "some.bin' is not valid UTF-8" in errors["binary"]
    assert "missing keys: context_length, n_layers, drop_rate, qkv_bias; unknown keys: layer" in errors["config"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
