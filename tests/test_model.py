"""tiny_gpt.model against references: transformers' GPT-2 (logits, greedy text, parameter counts), the
uncached loop (KV cache), eager mode (torch.compile), float32 (bfloat16 autocast), and the generate command."""
import argparse
import re

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tiny_gpt.cli import _generate_config, add_generate_parser, run_generate
from tiny_gpt.model import (GPT2_PRESETS, GPT_CONFIG_124M, FeedForward, GPTConfig, GPTModel, KVCache, TransformerBlock,
                            generate, gpt2_config_from_hf, gpt2_preset, load_gpt2_weights)

TINY_HF = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=50257, n_positions=128)
PROMPT = torch.tensor([[15496, 11, 314, 716, 257, 1332]])  # "Hello, I am a test"


@pytest.fixture(scope="module")
def hf():
    "A small random GPT-2 with every parameter moved off its initial value (ones, zeros, N(0, 0.02))."
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY_HF)).eval()
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def ours(hf):
    return load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), hf.state_dict()).eval()


def ids(n=24, batch=3, seed=1):
    return torch.randint(0, 50257, (batch, n), generator=torch.Generator().manual_seed(seed))


def max_diff(model, hf, x):
    with torch.no_grad(): return (model(x) - hf(x).logits).abs().max().item()


def test_logits_from_state_dict(ours, hf):
    assert max_diff(ours, hf, ids()) <= 1e-4


def test_hub_layout_without_prefix_and_with_mask_buffers(hf):
    "The original hub files: no `transformer.` prefix, the attention's bias/masked_bias buffers present."
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY_HF["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(128, 128)).view(1, 1, 128, 128)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    model = load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), state).eval()
    assert max_diff(model, hf, ids()) <= 1e-4


@pytest.mark.parametrize("kind", ["safetensors", "bin", "bin-file", "hf-cache"])
def test_logits_from_folder(hf, tmp_path, kind):
    hf.save_pretrained(tmp_path / "m")  # transformers 5 writes model.safetensors
    source = tmp_path / "m"
    if kind.startswith("bin"):  # the older format: a torch pickle, read with weights_only=True
        (source / "model.safetensors").unlink()
        torch.save(hf.state_dict(), source / "pytorch_model.bin")
        if kind == "bin-file": source = source / "pytorch_model.bin"
    if kind == "hf-cache":  # models--x/refs/main names snapshots/<hash>/
        cache = tmp_path / "models--tiny"
        (cache / "snapshots").mkdir(parents=True)
        (tmp_path / "m").rename(cache / "snapshots" / "abc123")
        (cache / "refs").mkdir()
        (cache / "refs" / "main").write_text("abc123")
        source = cache
    model = load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), source).eval()
    assert max_diff(model, hf, ids()) <= 1e-4


def test_greedy_40_tokens_like_transformers(ours, hf):
    expected = hf.generate(PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert expected.shape == (1, 46)
    for use_cache in (True, False):
        assert torch.equal(generate(ours, PROMPT, 40, context_size=128, use_cache=use_cache), expected)


def test_parameter_counts_like_transformers():
    "GPT-2 as released (tied head, q/k/v biases) against GPT2LMHeadModel; the book's untied layout pinned."
    for name, n_embd, n_layer, n_head in [("gpt2", 768, 12, 12), ("gpt2-medium", 1024, 24, 16)]:
        with torch.device("meta"):
            reference = GPT2LMHeadModel(GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head))
            ours = GPTModel(gpt2_preset(name))
        assert ours.cfg == GPT2_PRESETS[name]
        assert sum(p.numel() for p in ours.parameters()) == reference.num_parameters()
    assert reference.num_parameters() == 354_823_168 and GPT2_PRESETS["gpt2"].tie_embeddings
    book = GPTModel(GPT_CONFIG_124M)  # real tensors this time: the book's 163 M
    total = sum(p.numel() for p in book.parameters())
    assert (total, total - book.out_head.weight.numel()) == (163_009_536, 124_412_160)


def test_real_gpt2_small_loads_transformers_weights():
    "Full-size GPT-2 small, real tensors: transformers' random weights in, the same logits out."
    torch.manual_seed(0)
    reference = GPT2LMHeadModel(GPT2Config()).eval()
    assert reference.num_parameters() == 124_439_808
    model = load_gpt2_weights(GPTModel(gpt2_preset("gpt2")), reference.state_dict()).eval()
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    assert max_diff(model, reference, ids(16, batch=1)) <= 1e-4


def test_meta_model_takes_the_tensors(hf, tmp_path):
    "A model built on the meta device is filled without random init: same logits, head still tied, no aliasing."
    with torch.device("meta"): model = GPTModel(gpt2_config_from_hf(hf.config.to_dict()))
    state = hf.state_dict()
    load_gpt2_weights(model, state).eval()
    assert model.out_head.weight is model.emb.tok_emb.weight
    assert not any(p.is_meta for p in model.parameters()) and max_diff(model, hf, ids()) <= 1e-4
    assert all(p.data_ptr() != q.data_ptr() for p in model.parameters() for q in hf.parameters())  # a caller's dict
    hf.save_pretrained(tmp_path)
    with torch.device("meta"): from_file = GPTModel(gpt2_config_from_hf(tmp_path))
    assert max_diff(load_gpt2_weights(from_file, tmp_path).eval(), hf, ids()) <= 1e-4
    assert all(p.is_contiguous() for p in from_file.parameters())


def test_wrong_shapes_and_layouts_refused(hf):
    state = hf.state_dict()
    with pytest.raises(ValueError, match=r"h\.0\.ln_1\.weight has shape \(64,\) in the weights but the model's "
                                         r"trf_blocks\.0\.norm1\.weight has \(128,\)"):
        wide = {**gpt2_config_from_hf(hf.config.to_dict()).__dict__, "emb_dim": 128}
        load_gpt2_weights(GPTModel(wide), {k: v for k, v in state.items() if "wte" not in k and "wpe" not in k
                                           and "lm_head" not in k} | {"wte.weight": torch.zeros(50257, 128),
                                                                      "wpe.weight": torch.zeros(128, 128)})
    with pytest.raises(ValueError, match="the weights have 2 transformer blocks and the model has 12"):
        load_gpt2_weights(GPTModel(gpt2_preset("gpt2")), state)
    small = {**gpt2_config_from_hf(hf.config.to_dict()).__dict__, "qkv_bias": False}
    with pytest.raises(ValueError, match="build it with qkv_bias=True"):
        load_gpt2_weights(GPTModel(small), state)
    with pytest.raises(ValueError, match="score.weight is not a tensor of GPT-2"):
        load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), {**state, "score.weight": torch.zeros(2)})


def test_folder_without_weights(hf, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors"):
        load_gpt2_weights(GPTModel(gpt2_config_from_hf(hf.config.to_dict())), tmp_path)


def test_safetensors_missing_is_a_clear_error(hf, tmp_path, monkeypatch):
    hf.save_pretrained(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "safetensors.torch", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install safetensors"):
        load_gpt2_weights(GPTModel(gpt2_config_from_hf(tmp_path)), tmp_path / "model.safetensors")


def small_model(context_length=16, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, context_length=context_length, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0,
               qkv_bias=True) | kw
    return GPTModel(cfg).eval()


def test_cache_costs_one_position_per_token():
    model, fed = small_model(context_length=64), []
    model.emb.tok_emb.register_forward_hook(lambda m, args, out: fed.append(args[0].shape[1]))
    generate(model, torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=20, context_size=64)
    assert fed == [5] + [1] * 19
    fed.clear()
    generate(model, torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=20, context_size=64, use_cache=False)
    assert fed == list(range(5, 25))  # the uncached loop feeds the whole sequence every step


@pytest.mark.parametrize("context_size", [16, 7, 1])
def test_cached_equals_uncached_also_past_the_context(context_size):
    "Greedy tokens with and without the cache are identical, also once the window slides (cache refilled)."
    model, fed = small_model(), []
    prompt = torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(3))
    a = generate(model, prompt, max_new_tokens=30, context_size=context_size)
    b = generate(model, prompt, max_new_tokens=30, context_size=context_size, use_cache=False)
    assert torch.equal(a, b) and a.shape == (3, 35)
    model.emb.tok_emb.register_forward_hook(lambda m, args, out: fed.append(args[0].shape[1]))
    generate(model, prompt, max_new_tokens=30, context_size=context_size)
    assert max(fed) <= context_size  # cropped to the last context_size tokens


def test_cached_logits_match_full_forward_chunked():
    "Prefill, then a chunk of several positions after cached ones (the masked branch), then one at a time."
    model = small_model(context_length=32)
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(4))
    full = model(x)
    cache = [KVCache(32) for _ in model.trf_blocks]
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :6], cache), full[:, :6])
        torch.testing.assert_close(model(x[:, 6:15], cache), full[:, 6:15])
        for t in range(15, 20): torch.testing.assert_close(model(x[:, t:t + 1], cache)[:, 0], full[:, t])
    assert cache[0].pos == 20
    with pytest.raises(ValueError, match="positions 20 to 32 go past context_length 32"):
        model(x[:, :13], cache)
    small = [KVCache(16) for _ in model.trf_blocks]
    with torch.no_grad(), pytest.raises(ValueError, match="the cache holds 16 positions and has 10: 7 more do not fit"):
        model(x[:, :10], small); model(x[:, 10:17], small)


def test_sampling_reproducible_and_eos():
    model = small_model()
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(5)
    a = generate(model, prompt, 20, 16, temperature=1.0, top_k=5, top_p=0.9)
    torch.manual_seed(5)
    b = generate(model, prompt, 20, 16, temperature=1.0, top_k=5, top_p=0.9, use_cache=False)
    assert torch.equal(a, b)
    greedy = generate(model, prompt, 20, 16)
    eos = greedy[0, 6].item()
    stopped = generate(model, prompt, 20, 16, eos_id=eos)
    first = (greedy[0, 3:] == eos).nonzero()[0].item() + 3
    assert torch.equal(stopped, greedy[:, :first + 1])  # stops after writing eos_id, which is kept


def test_top_k_and_top_p_against_hand_computed():
    from tiny_gpt.model import next_token, _top_p_filter
    logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
    torch.manual_seed(0)
    draws = next_token(logits.expand(2000, -1), temperature=1.0, top_k=3)
    assert set(draws.flatten().tolist()) <= {0, 3, 7}
    probs = torch.softmax(logits[0], 0)  # 0.572, 0.357, 0.0617 for forward, toward, closer
    assert torch.isfinite(_top_p_filter(logits, float(probs[3]) + 1e-3)).sum() == 2
    assert torch.isfinite(_top_p_filter(logits, float(probs[3]) - 1e-3)).sum() == 1


def test_generate_argument_errors():
    model = small_model()
    prompt = torch.tensor([[1, 2]])
    for kwargs, message in [(dict(context_size=17), "context_length 16"), (dict(temperature=-1), "temperature"),
                            (dict(top_p=0.0), "top_p"), (dict(top_k=2.5), "top_k")]:
        with pytest.raises(ValueError, match=message):
            generate(model, prompt, 3, **{"context_size": 16, **kwargs})
    with pytest.raises(ValueError, match="unsqueeze|torch.tensor"):
        generate(model, torch.tensor([1, 2]), 3, 16)


def test_compile_fullgraph_forward_and_backward():
    model = small_model(context_length=32).train()
    x = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(6))
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)  # drop_rate 0: train mode is deterministic
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_compile_fullgraph_eval_forward_and_cached_prefill():
    "Inference compiles too: the eval-mode forward and a prefill (the forward with empty caches)."
    model = small_model(context_length=32).eval()
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), eager, atol=1e-5, rtol=1e-5)
        prefill = torch.compile(lambda ids, cache: model(ids, cache), fullgraph=True)
        cache = [KVCache(32) for _ in model.trf_blocks]
        last = prefill(x, cache)[:, -1]
    assert cache[0].pos == 20
    torch.testing.assert_close(last, eager[:, -1], atol=1e-5, rtol=1e-5)  # the full forward's last logits
    with torch.no_grad(): after = model(x[:, -1:], cache)[:, -1]   # the compiled prefill filled the cache
    torch.testing.assert_close(after, model(torch.cat([x, x[:, -1:]], 1))[:, -1], atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_close_to_float32():
    model = small_model(context_length=32)
    x = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
            text = generate(model, x[:, :4], 10, 32)
    assert low.dtype == torch.bfloat16 and text.shape == (2, 14)
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_config_forms():
    model = GPTModel({**GPT_CONFIG_124M, "n_layers": 1, "emb_dim": 64, "n_heads": 4, "context_length": 32})
    assert model.cfg["drop_rate"] == 0.1 and not model.cfg.tie_embeddings
    assert model.out_head.weight is not model.emb.tok_emb.weight
    lean = GPTModel({**GPT_CONFIG_124M, "n_layers": 1, "emb_dim": 64, "n_heads": 4, "context_length": 32,
                     "bias": False, "tie_embeddings": True})
    assert lean.out_head.weight is lean.emb.tok_emb.weight
    assert not [n for n, _ in lean.named_parameters() if n.endswith("bias")]
    with pytest.raises(ValueError, match="unknown preset"): gpt2_preset("gpt2-tiny")
    needed = "missing keys: context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias \\(a config has"
    with pytest.raises(ValueError, match=needed): GPTModel({"vocab_size": 10})



def test_the_parts_take_a_dict_or_a_gpt_config_and_one_forward_each():
    "The blocks read a dict or a GPTConfig alike; the module defines one forward per class, the cached one."
    import inspect
    import tiny_gpt.model as module
    cfg = {**GPT_CONFIG_124M, "n_layers": 1, "emb_dim": 64, "n_heads": 4, "context_length": 32, "bias": False}
    for form in (cfg, GPTConfig.of(cfg)):
        block = TransformerBlock(form)
        assert not [n for n, _ in block.named_parameters() if n.endswith("bias")]
        assert FeedForward(form).layers[0].bias is None
    assert FeedForward(GPT_CONFIG_124M).layers[0].bias is not None  # the book's dict: no key, biases on
    source = inspect.getsource(module)
    for cls in ("TransformerBlock", "GPTModel"):
        assert len(re.findall(rf"def forward\(self: {cls},", source)) == 1, cls
        assert inspect.signature(getattr(module, cls).forward).parameters["cache"].default is None
    assert source.count("    def forward(") == 3  # LayerNorm, GELU, FeedForward: no cache to take

# --- the `tiny-gpt generate` command's functions ---

def parse(*argv):
    parser = argparse.ArgumentParser(prog="tiny-gpt")
    add_generate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["generate", *argv])


def test_cli_with_weights_prints_transformers_greedy_text(hf, tmp_path, capsys):
    from tiny_gpt.tokenizers import TikTokenizer  # tiktoken's GPT-2 encoding from local files
    hf.save_pretrained(tmp_path)
    assert run_generate(parse("--prompt", "Hello, I am a test", "--weights", str(tmp_path),
                              "--max-new-tokens", "12")) == 0
    expected = hf.generate(PROMPT, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=50256)
    out, err = capsys.readouterr()
    ids = expected[0].tolist()
    if ids[-1] == 50256: ids = ids[:-1]
    assert out == TikTokenizer("gpt2").decode(ids) + "\n" and "random" not in err


def test_cli_without_weights_warns_and_is_reproducible(capsys):
    args = parse("--prompt", "Hi there", "--max-new-tokens", "3", "--seed", "1", "--temperature", "0.8",
                 "--top-k", "40")
    assert run_generate(args) == 0
    first = capsys.readouterr()
    assert "random and write noise" in first.err and "--weights" in first.err and first.out.startswith("Hi there")
    run_generate(args)
    assert capsys.readouterr().out == first.out


def test_cli_errors_name_the_fix(hf, tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'gpt3'; choose one of gpt2"):
        run_generate(parse("--prompt", "Hi", "--preset", "gpt3"))
    with pytest.raises(ValueError, match="the prompt has 1100 tokens and the model reads at most 1024: shorten"):
        run_generate(parse("--prompt", " a" * 1100))
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # no config.json: the gpt2 preset is assumed
    with pytest.raises(ValueError, match=r"2 transformer blocks and the model has 12: .*choose the --preset"):
        run_generate(parse("--prompt", "Hi", "--weights", str(tmp_path / "pytorch_model.bin")))
    with pytest.raises(ValueError, match="the prompt is empty"):
        run_generate(parse("--prompt", ""))


def test_cli_one_line_errors_and_the_gpt2_small_alias(tmp_path, capsys):
    "An empty --weights folder and --temperature nan are one-line errors; --preset gpt2-small is gpt2."
    from tiny_gpt.cli import BadInput, main
    with pytest.raises(BadInput, match="holds none of model.safetensors"):
        run_generate(parse("--prompt", "Hi", "--weights", str(tmp_path)))
    with pytest.raises(BadInput, match="--temperature must be >= 0"):
        run_generate(parse("--prompt", "Hi", "--temperature", "nan"))
    capsys.readouterr()
    for argv in (["--weights", str(tmp_path)], ["--temperature", "nan"]):
        assert main(["generate", "--prompt", "Hi", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tiny-gpt: error: ") and err.count("\n") == 1 and "Traceback" not in err
    small = _generate_config(parse("--prompt", "Hi", "--preset", "gpt2-small"))
    assert (small.emb_dim, small.n_layers, small.n_heads, small.context_length) == (768, 12, 12, 1024)


def test_cli_takes_the_prompt_as_its_first_argument(capsys):
    "`tiny-gpt generate \"ROMEO:\"` as a new user types it: the same text as --prompt; neither is one line."
    from tiny_gpt.cli import main
    argv = ["--max-new-tokens", "3", "--seed", "1", "--preset", "gpt2", "--device", "cpu"]
    assert main(["generate", "ROMEO:", *argv]) == 0
    positional = capsys.readouterr().out
    assert main(["generate", "--prompt", "ROMEO:", *argv]) == 0
    assert capsys.readouterr().out == positional and positional.startswith("ROMEO:")
    assert main(["generate", *argv]) == 2
    assert capsys.readouterr().err == 'tiny-gpt: error: give the text to continue: tiny-gpt generate "ROMEO:" (or --prompt TEXT)\n'


def test_generate_runs_on_the_models_device_and_answers_on_the_prompts():
    "A model on another device than the prompt (here meta, which a CPU machine has): the forward pass runs there."
    with torch.device("meta"): model = GPTModel({**GPT_CONFIG_124M, "n_layers": 1, "context_length": 16}).eval()
    seen = []
    model.emb.tok_emb.register_forward_hook(lambda module, args, out: seen.append(args[0].device.type))
    with pytest.raises(NotImplementedError):  # meta ids have no values to bring back to the CPU
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=2, context_size=16)
    assert seen == ["meta", "meta"]  # both forward passes ran where the weights are



def test_config_and_weight_loading_errors_name_the_fix(hf):
    from tiny_gpt.model import GPTConfig
    with pytest.raises(ValueError, match="unknown keys: n_head "):
        GPTConfig.of({**GPT_CONFIG_124M, "n_head": 12})
    with pytest.raises(ValueError, match="divisible by n_heads"): GPTConfig.of({**GPT_CONFIG_124M, "n_heads": 5})
    small = {**GPT_CONFIG_124M, "context_length": 128, "emb_dim": 128, "n_heads": 4, "n_layers": 2,
             "qkv_bias": True, "tie_embeddings": True}
    with pytest.raises(ValueError, match=r"wte.weight has shape \(50257, 64\) in the"):
        load_gpt2_weights(GPTModel(small), hf.state_dict())


# --- many prompts at once: left padding (chapter 6's closing section) -------------------------------------

def same_or_tied(model, alone: torch.Tensor, row: torch.Tensor, context_size: int, tol: float = 1e-4) -> bool:
    "`row` equals `alone`, or first differs at a step where the two best logits of `alone` were within `tol`."
    if row.shape != alone.shape: return False
    differ = (alone != row).nonzero()
    if len(differ) == 0: return True
    k = int(differ[0])
    with torch.no_grad(): best = model(alone[None, max(k - context_size, 0):k])[0, -1].topk(2).values
    return bool(best[0] - best[1] < tol)


PROMPTS = [[5], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7], [2, 7, 1, 8]]  # 1, 14 and 4 tokens


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("context_size", [16, 6])  # 6: the context is exceeded, the window slides
def test_batched_greedy_equals_each_prompt_alone(use_cache, context_size):
    from tiny_gpt.model import left_pad
    model = small_model()
    idx, pad = left_pad(PROMPTS, pad_id=0)
    assert idx.shape == (3, 14) and pad.tolist() == [13, 0, 10]
    together = generate(model, idx, 25, context_size, pad=pad, use_cache=use_cache)
    for row, p, prompt in zip(together, pad, PROMPTS):
        alone = generate(model, torch.tensor([prompt]), 25, context_size)[0]
        assert same_or_tied(model, alone, row[p:], context_size)
        assert (row[:p] == 0).all()  # the padding is kept as it was


def test_same_or_tied_fails_on_a_real_difference():
    "The check is not vacuous: a wrong token where the logits are far apart is refused."
    model = small_model()
    alone = generate(model, torch.tensor([PROMPTS[1]]), 10, 16)[0]
    wrong = alone.clone()
    with torch.no_grad(): logits = model(alone[None, :14])[0, -1]
    wrong[14] = logits.argmin()  # the worst token instead of the best
    assert not same_or_tied(model, alone, wrong, 16)


def test_batched_eos_per_row_and_a_batch_of_one():
    from tiny_gpt.model import left_pad
    model = small_model()
    alone = [generate(model, torch.tensor([p]), 20, 16)[0, len(p):] for p in PROMPTS]
    eos = int(alone[2][3])  # the 4th token of the last row: other rows may write it sooner, later or never
    idx, pad = left_pad(PROMPTS, pad_id=eos)
    together = generate(model, idx, 20, 16, eos_id=eos, pad=pad)[:, idx.shape[1]:]
    for row, a in zip(together, alone):
        stop = (a == eos).nonzero()
        n = int(stop[0]) + 1 if len(stop) else len(a)  # alone, with eos_id: it stops after writing it
        assert torch.equal(row[:n], a[:n]) and (row[n:] == eos).all()  # finished rows write eos_id
    one_idx, one_pad = left_pad([PROMPTS[1]])
    assert one_pad.tolist() == [0]
    assert torch.equal(generate(model, one_idx, 10, 16, pad=one_pad), generate(model, one_idx, 10, 16))


def test_unpadded_path_unchanged_and_padded_errors():
    from tiny_gpt.model import left_pad
    model, fed = small_model(), []
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad(): torch.testing.assert_close(model(x, None, torch.tensor([0, 0])), model(x))
    idx, pad = left_pad(PROMPTS)
    for bad in (torch.tensor([0, 0]), torch.tensor([14, 0, 0]), torch.tensor([-1, 0, 0]), [13, 0, 10]):
        with pytest.raises(ValueError, match="pad must be a \\(3,\\) tensor .* make idx and pad with left_pad"):
            generate(model, idx, 3, 16, pad=bad)
    with pytest.raises(ValueError, match="context_size 17 is longer than the model's context_length 16"):
        generate(model, idx, 3, 17, pad=pad)  # a window the model cannot read: one line, as unpadded
    with pytest.raises(ValueError, match="non-empty token id lists"): left_pad([])
    model.emb.tok_emb.register_forward_hook(lambda m, args, out: fed.append(args[0].shape[1]))
    short_idx, short_pad = left_pad(PROMPTS[::2])  # 1 and 4 tokens, 5 more: within the context
    generate(model, short_idx, 5, 16, pad=short_pad)
    assert fed == [4, 1, 1, 1, 1]  # padded rows use the cache too: a prefill, then one position per token


def test_padded_forward_compiles_fullgraph():
    model = small_model(context_length=32).eval()
    x, pad = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(9)), torch.tensor([5, 0])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x, None, pad), model(x, None, pad),
                                   atol=1e-5, rtol=1e-5)
