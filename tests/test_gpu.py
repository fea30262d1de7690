"""tiny_gpt on a CUDA GPU: training moves the model, prompts come from any device, checkpoints load on the
CPU and resume on the GPU (bit for bit with deterministic=True, to a tolerance without), a checkpoint
written on the GPU resumes and generates on the CPU, and more torchrun processes than GPUs is one line.

Every test here needs CUDA and is skipped without it (their CPU counterparts are in test_train.py and
test_model.py); `bash .gpu/check.sh` runs them on a GPU machine."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_gpt.data import tiny_data_loader
from tiny_gpt.io import corpus_path
from tiny_gpt.model import GPTModel, generate, init_gpt2_weights
from tiny_gpt.tokenizers import CharTokenizer
from tiny_gpt.train import load_checkpoint, model_from_checkpoint, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_RESUME_TOLERANCE = 0.05  # as in the pretraining chapter: a loss, resumed against straight, without deterministic


def char_data():
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    chars = CharTokenizer(text)
    ids = torch.tensor(chars.encode(text))
    kw = dict(batch_size=8, max_length=32, stride=32)
    return chars, tiny_data_loader(ids[:18000], seed=1, **kw), tiny_data_loader(ids[18000:], shuffle=False, **kw)


def run(folder, device, chars, tr, va, **kw):
    torch.manual_seed(0)
    cfg = {"vocab_size": chars.get_n_vocab_tokens(), "context_length": 32, "emb_dim": 32, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.1, "qkv_bias": False}
    model = init_gpt2_weights(GPTModel(cfg))
    settings = dict(max_steps=12, grad_accum_steps=2, lr=1e-2, warmup_steps=4, eval_interval=6, eval_iters=2,
                    log_interval=1)
    return train(model, tr, va, out_dir=folder, device=device, progress=False, **settings | kw), model


def test_train_moves_the_model_and_generate_takes_a_cpu_prompt(tmp_path):
    chars, tr, va = char_data()
    _, model = run(tmp_path / "run", "cuda", chars, tr, va)
    assert next(model.parameters()).is_cuda
    out = generate(model.eval(), torch.tensor([chars.encode("I had")]), 10, 32)  # a CPU prompt
    assert out.device.type == "cpu" and out.shape == (1, 15)
    cuda_out = generate(model, torch.tensor([chars.encode("I had")], device="cuda"), 10, 32)
    assert cuda_out.is_cuda and torch.equal(cuda_out.cpu(), out)


@pytest.mark.parametrize("deterministic", [True, False])
def test_resume_on_the_gpu(tmp_path, deterministic):
    chars, tr, va = char_data()
    straight, _ = run(tmp_path / "a", "cuda", chars, tr, va, deterministic=deterministic)
    run(tmp_path / "b", "cuda", chars, tr, va, deterministic=deterministic, stop_after=9)  # mid-step, mid-warmup
    resumed, _ = run(tmp_path / "b", "cuda", chars, tr, va, deterministic=deterministic, resume=True)
    if deterministic: assert straight["log"]["loss"] == resumed["log"]["loss"]
    else: assert straight["log"]["loss"] == pytest.approx(resumed["log"]["loss"], abs=GPU_RESUME_TOLERANCE)


def test_a_checkpoint_written_on_the_gpu_resumes_and_generates_on_the_cpu(tmp_path):
    chars, tr, va = char_data()
    run(tmp_path / "run", "cuda", chars, tr, va, stop_after=9)
    ckpt = load_checkpoint(tmp_path / "run")
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    history, model = run(tmp_path / "run", "cpu", chars, tr, va, resume=True)
    assert history["log"]["step"][-1] == 12 and next(model.parameters()).device.type == "cpu"
    restored, tokenizer = model_from_checkpoint(tmp_path / "run")
    assert generate(restored, torch.tensor([tokenizer.encode("I had")]), 5, 32).shape == (1, 10)


def test_bfloat16_where_the_gpu_has_it_else_float16_with_a_scaler(tmp_path):
    chars, tr, va = char_data()
    run(tmp_path / "run", "cuda", chars, tr, va, max_steps=2)
    scaler = load_checkpoint(tmp_path / "run")["scaler"]
    assert (scaler == {}) == torch.cuda.is_bf16_supported()  # a scaler only for float16


def test_more_torchrun_processes_than_gpus_is_one_line(tmp_path):
    n = torch.cuda.device_count()
    exe = Path(sys.executable).with_name("tiny-gpt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n + 1}",
           "--no-python", str(exe) if exe.exists() else "tiny-gpt", "train", str(corpus_path("the-verdict.txt")),
           "--tokenizer", "char", "--max-steps", "1", "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert f"torchrun started {n + 1} processes on a machine with {n} CUDA GPU(s)" in r.stderr, r.stderr[-3000:]
    assert "invalid device ordinal" not in r.stderr


def test_a_gpu_that_does_not_exist_is_one_line(tmp_path):
    from tiny_gpt.cli import main
    bad = f"cuda:{torch.cuda.device_count() + 6}"
    assert main(["train", str(corpus_path("the-verdict.txt")), "--out", str(tmp_path / "o"), "--device", bad]) == 2
