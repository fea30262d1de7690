"""GPT-2 by name, offline: a small random `transformers` GPT-2 written into a Hugging Face cache in a temporary
folder stands in for the real one (repository `gpt2`, the folder `models--gpt2`), with HF_HUB_OFFLINE=1.

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, when it is imported: the tests in this process
point its `constants` at the temporary cache, and one test runs in a fresh process with only the
environment variables set, as a user would."""
import hashlib
import json
import os
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants
from transformers import GPT2Config, GPT2LMHeadModel

from tiny_gpt.model import (GPT2_MODELS, GPT_CONFIG_124M, GPTModel, download_and_load_gpt2, gpt2_cell_ready,
                            gpt2_config_from_hf, gpt2_folder, load_gpt2_weights, load_weights_into_gpt)

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's name: a commit of the repository
X = torch.tensor([[15496, 11, 314, 716, 257, 1332], [6109, 3626, 6100, 345, 13, 198]])


@pytest.fixture(scope="module")
def hf():
    "A small random GPT-2, every parameter moved off its initial value (ones, zeros, N(0, 0.02))."
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=50257)).eval()
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)
    return model


def write_hub_cache(hf, cache, repo="gpt2"):
    "`hf` in huggingface_hub's cache layout: blobs named by their hash, a snapshot of links to them, refs/main."
    saved = cache.parent / f"saved-{repo}"
    hf.save_pretrained(saved)
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    for name in ("config.json", "model.safetensors"):
        data = (saved / name).read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (folder / "snapshots" / COMMIT / name).symlink_to(os.path.relpath(blob, folder / "snapshots" / COMMIT))
    return folder


@pytest.fixture
def hub(hf, tmp_path, monkeypatch):
    "A Hugging Face cache holding GPT-2 'gpt2' (the small random one), offline, as huggingface_hub's settings."
    cache = tmp_path / "hub"
    write_hub_cache(hf, cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    cache = tmp_path / "empty-hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def tiny_model(hf):
    return GPTModel(gpt2_config_from_hf(hf.config.to_dict()))


def logits(model):
    with torch.no_grad(): return model.eval()(X)


def test_the_names_and_their_repositories():
    assert GPT2_MODELS == {"gpt2": "gpt2", "gpt2-small": "gpt2", "124M": "gpt2", "gpt2-medium": "gpt2-medium",
                           "355M": "gpt2-medium", "gpt2-large": "gpt2-large", "774M": "gpt2-large",
                           "gpt2-xl": "gpt2-xl", "1558M": "gpt2-xl"}


def test_load_by_name_gives_transformers_logits(hf, hub):
    folder = gpt2_folder("gpt2")
    assert folder == hub / "models--gpt2" / "snapshots" / COMMIT
    model = load_gpt2_weights(GPTModel(gpt2_config_from_hf(folder)), "gpt2")
    with torch.no_grad(): expected = hf(X).logits
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=0)
    for name in ("124M", "gpt2-small"):  # the other names of the same model
        assert gpt2_folder(name) == folder


def test_a_cached_model_is_read_without_the_network(hf, hub, monkeypatch):
    "Online (downloads allowed, HF_HUB_OFFLINE unset), a cached GPT-2 is found with local_files_only=True."
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls, download = [], huggingface_hub.hf_hub_download
    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return download(*args, **kwargs)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    load_gpt2_weights(tiny_model(hf), "gpt2")
    assert calls == [True, True]  # config.json and model.safetensors, both from the cache


def test_a_fresh_process_reads_HF_HUB_CACHE_and_HF_HUB_OFFLINE(hf, tmp_path):
    "The user's way: only the environment says where the cache is and that there is no network."
    cache = tmp_path / "home" / "hub"
    write_hub_cache(hf, cache)
    with torch.no_grad(): torch.save(hf(X).logits, tmp_path / "expected.pt")
    code = ("import torch; from tiny_gpt.model import *\n"
            "folder = gpt2_folder('gpt2', download=False)\n"
            "model = load_gpt2_weights(GPTModel(gpt2_config_from_hf(folder)), 'gpt2').eval()\n"
            f"x = torch.tensor({X.tolist()})\n"
            f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
            "with torch.no_grad(): print((model(x) - expected).abs().max().item())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}  # the cache: $HF_HOME/hub
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) <= 1e-5


def test_the_books_functions_give_the_same_model(hf, hub, tmp_path):
    models_dir = tmp_path / "gpt2"  # the book's models_dir
    settings, params = download_and_load_gpt2("124M", models_dir)
    assert settings == {"n_vocab": 50257, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}
    assert sorted(p.name for p in (models_dir / "124M").iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(params) == ["b", "blocks", "g", "wpe", "wte"] and len(params["blocks"]) == 2
    block = params["blocks"][1]
    shapes = {f"{part}.{sub}.{leaf}": block[part][sub][leaf].shape
              for part in ("attn", "mlp") for sub in block[part] for leaf in block[part][sub]}
    assert shapes == {"attn.c_attn.w": (64, 192), "attn.c_attn.b": (192,), "attn.c_proj.w": (64, 64),
                      "attn.c_proj.b": (64,), "mlp.c_fc.w": (64, 256), "mlp.c_fc.b": (256,),
                      "mlp.c_proj.w": (256, 64), "mlp.c_proj.b": (64,)}  # TensorFlow's Conv1D: (in, out)
    assert {k: v.shape for k, v in block["ln_1"].items()} == {"g": (64,), "b": (64,)}
    assert params["wte"].shape == (50257, 64) and params["g"].shape == (64,)
    assert type(params["wpe"]).__module__ == "numpy"
    state = hf.state_dict()
    assert (params["blocks"][0]["attn"]["c_attn"]["w"] == state["transformer.h.0.attn.c_attn.weight"].numpy()).all()
    book_cfg = {**GPT_CONFIG_124M, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "context_length": 64,
                "drop_rate": 0.0, "qkv_bias": True}  # the book's config, updated for the weights: untied head
    book = load_weights_into_gpt(GPTModel(book_cfg), params)
    by_name = load_gpt2_weights(tiny_model(hf), "gpt2")
    assert torch.equal(logits(book), logits(by_name))
    again = download_and_load_gpt2("124M", models_dir)  # a second call reads models_dir/124M
    assert (again[1]["wte"] == params["wte"]).all()


def test_a_missing_cache_is_one_line_naming_the_command(hf, empty_hub):
    for name in ("gpt2", "355M"):
        with pytest.raises(FileNotFoundError) as e:
            load_gpt2_weights(tiny_model(hf), name)
        message = str(e.value)
        assert "\n" not in message and f"`tiny-gpt download {name}` fetches it" in message
        assert f"GPT-2 {name!r}" in message and "HF_HUB_OFFLINE is set" in message
    assert list(empty_hub.rglob("*")) == []  # nothing half-written left behind
    with pytest.raises(FileNotFoundError, match="downloading is off: `tiny-gpt download gpt2`"):
        gpt2_folder("gpt2", download=False, cache_dir=empty_hub)


def test_a_truncated_safetensors_file_is_refused_in_one_line(hf, hub):
    blob = (hub / "models--gpt2" / "snapshots" / COMMIT / "model.safetensors").resolve()
    data = blob.read_bytes()
    for keep in (4, 2_000, len(data) - 10):  # in the header's length, in the header, in the data
        blob.write_bytes(data[:keep])
        with pytest.raises(ValueError) as e:
            load_gpt2_weights(tiny_model(hf), "gpt2")
        message = str(e.value)
        assert "\n" not in message and "is not a complete safetensors file" in message
        assert str(blob) in message and e.value.__cause__ is None and e.value.__suppress_context__
        blob.write_bytes(data)


def test_a_file_or_folder_of_that_name_wins(hf, empty_hub, tmp_path, monkeypatch):
    "`gpt2` as a folder in the working directory is read as a folder, with the cache empty."
    hf.save_pretrained(tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    with torch.no_grad(): expected = hf(X).logits
    torch.testing.assert_close(logits(load_gpt2_weights(tiny_model(hf), "gpt2")), expected, atol=1e-5, rtol=0)


def test_the_books_models_dir_named_like_a_model_does_not_hide_the_name(hf, hub, tmp_path, monkeypatch):
    "The book's `models_dir=\"gpt2\"` leaves a folder gpt2/124M/: `gpt2` is still the cached model's name."
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2" / "124M").mkdir(parents=True)
    with torch.no_grad(): expected = hf(X).logits
    torch.testing.assert_close(logits(load_gpt2_weights(tiny_model(hf), "gpt2")), expected, atol=1e-5, rtol=0)


def test_unknown_names_and_a_missing_huggingface_hub(hf, monkeypatch):
    with pytest.raises(ValueError, match="unknown GPT-2 'gpt3': choose one of gpt2, gpt2-small, 124M, "):
        gpt2_folder("gpt3")
    with pytest.raises(ValueError, match="unknown GPT-2 '125M'"):
        download_and_load_gpt2("125M", "unused")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(ImportError, match=r'^GPT-2 weights by name need huggingface_hub: '
                                          r'pip install "tiny_gpt\[hub\]"$'):
        load_gpt2_weights(tiny_model(hf), "gpt2")


def test_gpt2_cells_guard_themselves(hub, empty_hub, capsys, monkeypatch):
    "In Jupyter a `#| gpt2` cell skips itself with one line; under nbdev_test (IN_TEST) it fails loudly."
    monkeypatch.delenv("IN_TEST", raising=False)
    assert gpt2_cell_ready("gpt2") is False  # empty_hub came last: the cache is empty
    assert capsys.readouterr().out == ("skipped: GPT-2's weights are not in the Hugging Face cache; "
                                       "`tiny-gpt download gpt2` fetches them\n")
    monkeypatch.setenv("IN_TEST", "1")
    with pytest.raises(RuntimeError, match="needs GPT-2's weights"):
        gpt2_cell_ready("gpt2")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert gpt2_cell_ready("gpt2") is True and capsys.readouterr().out == ""
    assert json.loads((gpt2_folder("gpt2") / "config.json").read_text())["n_embd"] == 64
