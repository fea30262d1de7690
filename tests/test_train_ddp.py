"""tiny_gpt.train under real DDP: `torchrun --nproc_per_node=2`, gloo backend, CPU.

With sampling="windows" the two ranks read disjoint halves of each global batch, so two ranks with batch 4 must
reproduce one process with batch 8 (losses within 1e-5); a run stopped and resumed under torchrun is bitwise
the run that was not stopped; only rank 0 writes."""
import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch, torch.distributed as dist
    from torch import nn
    from tiny_gpt.data import tiny_data_loader
    from tiny_gpt.train import TrainSettings, load_checkpoint, train

    class TinyLM(nn.Module):
        def __init__(self, vocab=48, dim=32, context=16):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)
        def forward(self, ids):
            t = ids.shape[1]
            x = self.tok(ids) + self.pos(torch.arange(t))
            x = x + x.cumsum(1) / torch.arange(1, t + 1)[:, None]
            return self.head(self.norm(x + self.mlp(x)))

    out, batch = sys.argv[1], int(sys.argv[2])
    ddp = "RANK" in os.environ
    if ddp: dist.init_process_group("gloo")
    rng = np.random.default_rng(0)
    ids = torch.from_numpy((np.cumsum(rng.integers(1, 4, 6000)) % 48).astype(np.int64))
    settings = TrainSettings(max_steps=8, lr=1e-2, warmup_steps=3, grad_accum_steps=2, eval_interval=4,
                             eval_iters=3, log_interval=1)

    def run(folder, stop_after=None, resume=False):
        torch.manual_seed(0)
        model = TinyLM()
        kw = dict(batch_size=batch, max_length=16, stride=8, sampling="windows", seed=3)
        tr, va = tiny_data_loader(ids[:5000], **kw), tiny_data_loader(ids[5000:], shuffle=False, **kw)
        h = train(model, tr, va, settings, out_dir=os.path.join(out, folder), resume=resume, stop_after=stop_after,
                  progress=False, device="cpu")  # gloo: every process on the CPU, also on a GPU machine
        return h, model

    straight, model = run("straight")
    if ddp:
        run("resumed", stop_after=6)                       # micro-batch 6: step 3, mid-warmup, mid-epoch
        resumed, model2 = run("resumed", resume=True)
        same = all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
        ck = [load_checkpoint(os.path.join(out, f)) for f in ("straight", "resumed")]
        opt_same = all(torch.equal(a, b) for i in ck[0]["optimizer"]["state"]
                       for a, b in zip(ck[0]["optimizer"]["state"][i].values(), ck[1]["optimizer"]["state"][i].values()))
        result = {"rank": dist.get_rank(), "world": dist.get_world_size(), "straight": straight, "resumed": resumed,
                  "same_params": same, "same_optimizer": opt_same, "ckpt_world": ck[0]["world_size"],
                  "ckpt_rngs": len(ck[0]["rng"]), "files": sorted(os.listdir(os.path.join(out, "straight")))}
        name = f"rank{dist.get_rank()}.json"
        dist.destroy_process_group()
    else: result, name = {"straight": straight}, "single.json"
    with open(os.path.join(out, name), "w") as f: json.dump(result, f)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_ddp")
    script = tmp / "run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp / "ddp"), "4"]
    single = [sys.executable, str(script), str(tmp / "single"), "8"]
    for cmd, folder in ((ddp, "ddp"), (single, "single")):
        (tmp / folder).mkdir()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    load = lambda p: json.loads(p.read_text(encoding="utf-8"))
    return [load(tmp / "ddp" / f"rank{i}.json") for i in range(2)], load(tmp / "single" / "single.json")


def test_two_ranks_with_batch_4_equal_one_process_with_batch_8(runs):
    (r0, r1), single = runs
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    a, b = r0["straight"], single["straight"]
    assert r0["straight"]["log"]["loss"] == r1["straight"]["log"]["loss"]  # every rank logs the global mean
    assert len(a["log"]["loss"]) == 8
    assert a["log"]["loss"] == pytest.approx(b["log"]["loss"], abs=1e-5)
    assert a["log"]["loss"][-1] < a["log"]["loss"][0] - 0.2                # it learned something
    for k in ("train_loss", "val_loss"): assert a["eval"][k] == pytest.approx(b["eval"][k], abs=1e-5)
    assert a["eval"]["tokens_seen"] == b["eval"]["tokens_seen"] == [4 * 2 * 8 * 16, 8 * 2 * 8 * 16]


def test_resume_under_torchrun_is_exact(runs):
    for r in runs[0]:
        assert r["resumed"]["log"]["loss"] == r["straight"]["log"]["loss"]
        assert r["resumed"]["eval"]["val_loss"] == r["straight"]["eval"]["val_loss"]
        assert r["same_params"] and r["same_optimizer"]


def test_rank_0_writes_one_checkpoint_with_every_ranks_rng(runs):
    r0 = runs[0][0]
    assert r0["files"] == ["checkpoint.pt", "metrics.jsonl"]
    assert r0["ckpt_world"] == 2 and r0["ckpt_rngs"] == 2


def test_the_command_line_under_torchrun_equals_one_process(tmp_path):
    "`torchrun --no-python tiny-gpt train`: it joins the process group itself; 2 x batch 4 == 1 x batch 8."
    from tiny_gpt.io import corpus_path
    from tiny_gpt.train import load_checkpoint
    exe = Path(sys.executable).with_name("tiny-gpt")
    common = [str(corpus_path("the-verdict.txt")), "--tokenizer", "char", "--preset", "tiny", "--sampling", "windows",
              "--max-steps", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1", "--lr", "3e-3",
              "--warmup-steps", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python", str(exe),
           "train", *common, "--batch-size", "4", "--out", str(tmp_path / "ddp")]
    single = [str(exe), "train", *common, "--batch-size", "8", "--out", str(tmp_path / "single")]
    outputs = []
    for cmd in (ddp, single):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        outputs.append(r.stdout)
    assert outputs[0].count("done:") == 1  # only rank 0 reports
    metrics = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
               for d in ("ddp", "single")]
    assert [m["step"] for m in metrics[0]] == [m["step"] for m in metrics[1]] == [3, 6]  # written once, by rank 0
    for a, b in zip(*metrics):
        assert (a["train_loss"], a["val_loss"]) == pytest.approx((b["train_loss"], b["val_loss"]), abs=1e-5)
    assert load_checkpoint(tmp_path / "ddp")["world_size"] == 2
