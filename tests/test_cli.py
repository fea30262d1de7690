"""The `tiny-gpt` console command, run as a user runs it: the installed script, in a separate process.
The bad-input batteries call the same `main` in this process (`run_here`): a process start per case costs
seconds on a 2-core machine and tests nothing the separate-process tests do not."""
import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = shutil.which("tiny-gpt", path=str(Path(sys.executable).parent)) or shutil.which("tiny-gpt")


def run(*args, exe=None, **env):
    "Run `tiny-gpt args` (or `exe args`) with extra environment variables; return the CompletedProcess."
    merged = {**os.environ, "PYTHONIOENCODING": "utf-8", **env}
    return subprocess.run([*(exe or [EXE]), *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          env=merged, timeout=900, stdin=subprocess.DEVNULL)


def run_here(*args, **env) -> subprocess.CompletedProcess:
    "`tiny-gpt args` in this process: the console script's own `main`, its output and exit status captured."
    from unittest import mock
    from tiny_gpt.commands import main
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: status = main(list(map(str, args)))
        except SystemExit as e: status = e.code  # argparse's own exits
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def offline_env(folder: Path) -> dict:
    "Environment with no data folder, an empty cache and no network: The Verdict cannot be had."
    return dict(TINY_GPT_DATA=str(folder / "data"), TINY_GPT_CACHE=str(folder / "cache"), TINY_GPT_OFFLINE="1")


def test_console_script_is_installed():
    assert EXE and Path(EXE).exists(), "`pip install -e .` installs the tiny-gpt command next to python"


@pytest.fixture(scope="module")
def verdict_run():
    from tiny_gpt.io import corpus_path
    data = corpus_path("the-verdict.txt").parent  # missing data is an error naming TINY_GPT_DATA, not a skip
    start = time.perf_counter()
    out = run("demo", TINY_GPT_DATA=str(data))
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    print(f"tiny-gpt demo on The Verdict: {seconds:.1f} s")
    return out, seconds


STAGE2_VALUES = [  # what the chapters' Stage 2 examples print
    "Tokens     : [7454, 2402, 257, 640, 287, 20443, 38, 11571, 986]",
    "successfully: 20,479 characters",
    "['I', 'HAD', 'always', 'thought', 'Jack', 'Gisburn', 'rather', 'a', 'cheap', 'genius', '--',",
    "Total Tokens: 1132",
    "[1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]",
    "[1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]",
    "[15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 262, 20562, 13]",
    "Total Tokens: 19",
    # the second batch for stride 1, 2, 4, then the first batch of 4 with stride 2
    "Second Batch\n[tensor([[ 367, 2885, 1464, 1807]]), tensor([[2885, 1464, 1807, 3619]])]",
    "Second Batch\n[tensor([[2885, 1464, 1807, 3619]]), tensor([[1464, 1807, 3619,  402]])]",
    "Second Batch\n[tensor([[1807, 3619,  402,  271]]), tensor([[ 3619,   402,   271, 10899]])]",
    "First Batch\n[tensor([[   40,   367,  2885,  1464],\n        [ 2885,  1464,  1807,  3619],\n"
    "        [ 1807,  3619,   402,   271],\n        [  402,   271, 10899,  2138]]),",
    "Total tokens present in the vocabulary\n50257\nEmbedding(50257, 256)",
    "Token IDs:\n tensor([[   40,   367,  2885,  1464],\n        [ 1464,  1807,  3619,   402],\n"
    "        [  402,   271, 10899,  2138],\n        [ 2138,   257,  7026, 15632],\n"
    "        [15632,   438,  2016,   257],\n        [  257,   922,  5891,  1576],\n"
    "        [ 1576,   438,   568,   340],\n        [  340,   373,   645,  1049]])",
    "Inputs shape:\n torch.Size([8, 4])",
    "Token embeddings shape: torch.Size([8, 4, 256])",
    "Positional embeddings shape: torch.Size([4, 256])",
    "Final input embeddings shape: torch.Size([8, 4, 256])",
    "✅ The pipeline ran end to end, text to generated text",
]


def test_demo_ends_with_text_a_trained_model_wrote(verdict_run):
    "The README's first command: a small GPT trained on The Verdict, its losses falling, and what it writes."
    out = verdict_run[0].stdout
    part_c = out[out.index("Part C: a small GPT, trained"):out.index("Part D: what it writes")]
    losses = validation_losses(part_c)
    assert len(losses) == 4 and losses[-1] < losses[0] - 1.5, part_c
    written = out[out.index("Part D: what it writes"):].splitlines()[2]
    assert written.startswith("I HAD always ") and len(written) == 14 + 150


@pytest.mark.parametrize("expected", STAGE2_VALUES)
def test_demo_prints_the_stage2_values(verdict_run, expected):
    assert expected in verdict_run[0].stdout


def test_demo_report_is_short_and_sectioned(verdict_run):
    out = verdict_run[0]
    assert out.stderr == ""
    headers = [l for l in out.stdout.splitlines()
               if l.startswith(("Environment", "Part A:", "Part B:", "Input embeddings:", "Part C:", "Part D:"))]
    assert len(headers) == 7, headers
    assert len(out.stdout.splitlines()) < 165      # a preview of the split, not the whole story
    assert "no exterminating our kind of art" not in out.stdout  # the story's last line is not printed
    assert "The Verdict is not available" not in out.stdout


def test_demo_on_a_given_file(tmp_path):
    from tiny_gpt.tokenizers import TikTokenizer
    story = tmp_path / "story.txt"
    story.write_text("A small fox ran across the frozen river, stopped, listened, and ran on. " * 4, encoding="utf-8")
    out = run("demo", story, "--preview", 5)
    assert out.returncode == 0, out.stderr
    import torch
    ids = TikTokenizer().encode(story.read_text(encoding="utf-8"))
    assert f"Loaded '{story}' successfully" in out.stdout
    assert "(the first 5 of " in out.stdout and "['A', 'small', 'fox', 'ran', 'across'] ..." in out.stdout
    batch = torch.tensor([ids[3 * k:3 * k + 4] for k in range(8)])  # the (8, 4) batch, stride 3
    assert f"Token IDs:\n {batch}\n" in out.stdout
    assert "Final input embeddings shape: torch.Size([8, 4, 256])" in out.stdout


def validation_losses(report: str) -> list[float]:
    "The numbers of the demo's 'Validation loss:' line: the uniform guess, then each evaluation."
    line = next(l for l in report.splitlines() if l.startswith("Validation loss: "))
    return [float(v.split()[-1]) for v in line.replace(" (a uniform guess)", "").split("→")]


def test_demo_falls_back_to_the_sample_text_offline(tmp_path):
    "CI's first command: `TINY_GPT_DATA=/nonexistent TINY_GPT_CACHE=$(mktemp -d) TINY_GPT_OFFLINE=1 tiny-gpt demo`."
    from tiny_gpt.io import SAMPLE_TEXT
    from tiny_gpt.tokenizers import RegexTokenizer, TikTokenizer
    out = run("demo", TINY_GPT_DATA="/nonexistent", TINY_GPT_CACHE=str(tmp_path / "cache"), TINY_GPT_OFFLINE="1")
    assert out.returncode == 0, out.stderr
    notes = [l for l in out.stdout.splitlines() if "The Verdict" in l]
    assert len(notes) == 1 and "running on the sample text shipped with tiny_gpt" in notes[0], notes
    assert f"Total Tokens: {len(RegexTokenizer(SAMPLE_TEXT).create_vocabulary())}" in out.stdout
    import torch
    ids = TikTokenizer().encode(SAMPLE_TEXT)
    assert f"Stride = 1\nFirst Batch\n{[torch.tensor([ids[0:4]]), torch.tensor([ids[1:5]])]}\n" in out.stdout
    assert "✅ The pipeline ran end to end" in out.stdout
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing downloaded
    # the newcomer's first screen shows a model learning: every evaluation below the one before
    losses = validation_losses(out.stdout)
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("name, make, message", [
    ("missing", lambda p: p / "missing.txt", "No such file"),
    ("folder", lambda p: p, "is a directory"),
    ("latin-1", lambda p: (p / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1")) and p / "latin1.txt",
     "is not valid UTF-8"),
    ("short", lambda p: (p / "short.txt").write_text("Too short.", encoding="utf-8") and p / "short.txt",
     "has 3 GPT-2 tokens; the demo needs at least 26"),
    ("empty", lambda p: (p / "empty.txt").write_bytes(b"") or p / "empty.txt", "has 0 GPT-2 tokens"),
])
def test_bad_file_is_one_line_and_status_2(tmp_path, name, make, message):
    out = run_here("demo", make(tmp_path))
    assert out.returncode == 2, (name, out.returncode, out.stderr)
    assert out.stderr.startswith("tiny-gpt: error: ") and message in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""  # the file is checked before any of the report is printed


def test_version_usage_and_bad_options():
    from tiny_gpt import __version__
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tiny_gpt {__version__}"
    out = run()
    assert out.returncode == 2 and "usage: tiny-gpt" in out.stderr
    out = run("demo", "--preview", "-1")
    assert out.returncode == 2 and "tiny-gpt: error: --preview must be >= 0, got -1" in out.stderr
    out = run("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_demo_piped_into_a_closed_reader_exits_quietly(tmp_path):
    "`tiny-gpt demo | head -1`: the reader is gone before the report is written."
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: every write fails with a broken pipe
    try:
        out = subprocess.run([EXE, "demo"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
                             env={**os.environ, **offline_env(tmp_path)})
    finally: os.close(write)
    assert out.returncode == 1 and out.stderr == "", out.stderr


# ---------------------------------------------------------------- tiny-gpt prepare

def lines(text: str) -> int:
    return text.count("\n")


def assert_one_line_error(out, *expected: str) -> None:
    "Exit status 2, one line on stderr that starts like argparse's errors and holds `expected`, no traceback."
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("tiny-gpt: error: ") and lines(out.stderr) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for text in expected: assert text in out.stderr, (text, out.stderr)


def test_prepare_round_trip(tmp_path):
    import numpy as np
    from tiny_gpt import store
    from tiny_gpt.tokenizers import TikTokenizer
    text = "The keeper climbed the steps and lit the lamp.\nThe sea was rough that night.\n"
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    out = run_here("prepare", tmp_path / "doc.txt", "--out", tmp_path / "store", "--workers", 0)
    assert out.returncode == 0, out.stderr
    assert "wrote shard 0/1" in out.stdout
    tok = TikTokenizer()
    opened = store.open_store(tmp_path / "store")
    ids = np.concatenate(opened.shards).tolist()
    assert ids == tok.encode(text) + [tok.eot_token]  # one document, closed by <|endoftext|>
    demo = run_here("demo", tmp_path / "doc.txt")  # and the same text is too short for the demo: a clear error
    assert_one_line_error(demo, "the demo needs at least 26")


def test_prepare_errors_are_one_line(tmp_path):
    assert_one_line_error(run_here("prepare", tmp_path / "nope.txt", "--out", tmp_path / "store"), "nope.txt")


def test_prepare_refuses_an_existing_store_unless_overwrite(tmp_path):
    "Today's trap: preparing into a folder that holds a store overwrote it, exit 0."
    from tiny_gpt import store
    (tmp_path / "a.txt").write_text("The first store.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("A second text, quite different.", encoding="utf-8")
    assert run_here("prepare", tmp_path / "a.txt", "--out", tmp_path / "s", "--quiet", "--workers", 0).returncode == 0
    first = store.open_store(tmp_path / "s").shards[0].tolist()
    out = run_here("prepare", tmp_path / "b.txt", "--out", tmp_path / "s")
    assert_one_line_error(out, "already holds shard 0/1", "--overwrite")
    assert "overwrite=True" not in out.stderr  # the command line's own words
    assert store.open_store(tmp_path / "s").shards[0].tolist() == first
    out = run_here("prepare", tmp_path / "b.txt", "--out", tmp_path / "s", "--overwrite", "--workers", 0)
    assert out.returncode == 0, out.stderr
    assert store.open_store(tmp_path / "s").shards[0].tolist() != first


def test_prepare_refuses_mixed_splittings(tmp_path):
    "Today's trap: --shard 0/2 into a folder of a 0/1 store was accepted and failed when loading, with a traceback."
    (tmp_path / "a.txt").write_text("Some words here.", encoding="utf-8")
    assert run_here("prepare", tmp_path / "a.txt", "--out", tmp_path / "s", "--quiet", "--workers", 0).returncode == 0
    for extra in ([], ["--overwrite"]):
        out = run_here("prepare", tmp_path / "a.txt", "--out", tmp_path / "s", "--shard", "0/2", *extra)
        assert_one_line_error(out, "shard 0/2 would mix two splittings")
    assert sorted(p.name for p in (tmp_path / "s").glob("*.json")) == ["shard-00000-of-00001.json"]


def test_prepare_refuses_an_input_without_tokens(tmp_path):
    "Today's trap: an empty input made a store that failed only when loading."
    (tmp_path / "empty.txt").write_bytes(b"")
    assert_one_line_error(run_here("prepare", tmp_path / "empty.txt", "--out", tmp_path / "s"), "holds no text")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", ["Hello".encode("utf-16"), bytes(range(256)) * 4], ids=["utf-16", "binary"])
def test_a_failed_prepare_leaves_nothing_behind(tmp_path, content):
    "Today's trap: a failed prepare left an empty --out folder."
    (tmp_path / "in.txt").write_bytes(content)
    assert_one_line_error(run_here("prepare", tmp_path / "in.txt", "--out", tmp_path / "s"), "in.txt")
    assert not (tmp_path / "s").exists()


def test_prepare_out_naming_a_file(tmp_path):
    "Today's trap: `[Errno 17] File exists`."
    (tmp_path / "a.txt").write_text("Some words here.", encoding="utf-8")
    out = run_here("prepare", tmp_path / "a.txt", "--out", tmp_path / "a.txt")
    assert_one_line_error(out, "a.txt' is a file; a token store is a folder")
    assert "Errno" not in out.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--val-fraction", "1.5", "--val-fraction must be in [0, 1), got 1.5"),
    ("--shard", "two", "--shard must look like 'K/N'"),
    ("--shard", "2/2", "--shard 2/2 is out of range: K counts from 0"),
    ("--workers", "-1", "--workers must be >= 0, got -1"),
    ("--chunk-mb", "0", "--chunk-mb must be > 0, got 0"),
])
def test_prepare_errors_speak_the_flag_names(tmp_path, option, value, message):
    "Today's trap: `--val-fraction 1.5` was reported as `val_fraction`."
    (tmp_path / "a.txt").write_text("Some words here.", encoding="utf-8")
    out = run_here("prepare", tmp_path / "a.txt", "--out", tmp_path / "s", option, value)
    assert_one_line_error(out, message)
    if "-" in option[2:]: assert option[2:].replace("-", "_") not in out.stderr  # no Python parameter names
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- a bug keeps its traceback

def test_a_bug_keeps_its_traceback_in_process(tmp_path, monkeypatch):
    "Only BadInput becomes one line; a ValueError or KeyError from our own code propagates out of main."
    import tiny_gpt.cli as cli
    import tiny_gpt.store as store
    (tmp_path / "a.txt").write_text("Some words here.", encoding="utf-8")

    def bug(*args, **kwargs): raise ValueError("simulated bug deep inside prepare")
    monkeypatch.setattr(store, "_encode_piece", bug)
    with pytest.raises(ValueError, match="simulated bug"):
        cli.main(["prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "s"), "--quiet", "--workers", "0"])
    assert not (tmp_path / "s").exists()  # and the failed run left nothing behind

    def key_bug(*args, **kwargs): raise KeyError("simulated bug in the report")
    monkeypatch.setattr(cli, "demo_tiktokenizer", key_bug)
    monkeypatch.setenv("TINY_GPT_OFFLINE", "1")
    with pytest.raises(KeyError, match="simulated bug"): cli.main(["demo", "--preview", "3"])
    assert cli.main(["demo", str(tmp_path / "missing.txt")]) == 2  # while bad input is still one line


def test_a_bug_inside_the_loader_keeps_its_traceback(tmp_path, monkeypatch):
    "Only the loader's deliberate errors become BadInput; a ValueError from a bug inside it propagates as is."
    import traceback
    import tiny_gpt.cli as cli
    import tiny_gpt.io as tio
    story = tmp_path / "story.txt"
    story.write_text("Some words here. " * 20, encoding="utf-8")

    def buggy_read(path): raise ValueError("simulated bug inside io_load_text_file")
    monkeypatch.setattr(tio, "_read_utf8", buggy_read)
    with pytest.raises(ValueError, match="simulated bug") as e: cli.main(["demo", str(story)])
    assert not isinstance(e.value, cli.BadInput)
    frames = [f.name for f in traceback.extract_tb(e.value.__traceback__)]
    assert frames[-2:] == ["io_load_text_file", "buggy_read"], frames  # the traceback reaches the bug


def test_the_loaders_deliberate_errors_become_bad_input(tmp_path, monkeypatch):
    import tiny_gpt.cli as cli
    import tiny_gpt.io as tio
    (tmp_path / "utf16.txt").write_text("café au lait", encoding="utf-16")
    with pytest.raises(cli.BadInput, match="is UTF-16"): cli.demo_text(tmp_path / "utf16.txt", verbose=False)
    with pytest.raises(cli.BadInput, match="is a directory"): cli.demo_text(tmp_path, verbose=False)

    def locked(path): raise PermissionError(f"[Errno 13] Permission denied: '{path}'")
    monkeypatch.setattr(tio, "_read_utf8", locked)
    with pytest.raises(cli.BadInput, match="Permission denied"): cli.demo_text(tmp_path / "x.txt", verbose=False)
    damaged = tmp_path / "data"
    damaged.mkdir()
    (damaged / tio.VERDICT_NAME).write_text("not the story", encoding="utf-8")
    monkeypatch.setenv("TINY_GPT_DATA", str(damaged))
    monkeypatch.setenv("TINY_GPT_OFFLINE", "1")
    with pytest.raises(cli.BadInput, match="expected " + tio.VERDICT_SHA256): cli.demo_text(verbose=False)


BUG_IN_STORE = """
import sys
import tiny_gpt.store as store
def bug(*args, **kwargs): raise ValueError("simulated bug deep inside prepare")
store._encode_piece = bug
from tiny_gpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_shows_its_traceback_on_the_command_line(tmp_path):
    (tmp_path / "a.txt").write_text("Some words here.", encoding="utf-8")
    out = run("prepare", tmp_path / "a.txt", "--out", tmp_path / "s", "--workers", 0,
              exe=[sys.executable, "-c", BUG_IN_STORE])
    assert out.returncode == 1, out.stderr
    assert "Traceback (most recent call last)" in out.stderr and "ValueError: simulated bug" in out.stderr
    assert not out.stderr.startswith("tiny-gpt: error:")


# ---------------------------------------------------------------- numbers and files a new user gets wrong

def test_lr_nan_is_one_line(tmp_path):
    "Today's trap: `--lr nan` reached torch's optimizer: `ValueError: Invalid learning rate: nan`."
    (tmp_path / "story.txt").write_text("The keeper climbed the steps and lit the lamp. " * 40, encoding="utf-8")
    out = run("train", tmp_path / "story.txt", "--out", tmp_path / "run", "--lr", "nan", "--device", "cpu")
    assert_one_line_error(out, "--lr must be a finite number, got nan")
    assert not (tmp_path / "run").exists()


def float_options() -> list[tuple[str, str]]:
    "(command, option) for every float option of every command, read from the parser itself."
    import argparse
    from tiny_gpt.cli import _parser
    from tiny_gpt.commands import SUBCOMMANDS
    commands = next(a for a in _parser(SUBCOMMANDS)._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [(name, action.option_strings[0]) for name, p in commands.items() for action in p._actions
            if action.type is float]


REQUIRED = {"prepare": ["in.txt", "--out", "store"], "train": ["in.txt", "--out", "run"], "generate": ["Hi"],
            "finetune-classifier": ["data.tsv", "--out", "run"], "classify": ["--checkpoint", "run", "Hi"],
            "finetune-instruct": ["data.json", "--out", "run"], "chat": ["--checkpoint", "run"],
            "score": ["responses.json"]}


@pytest.mark.parametrize("command, option", float_options())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite_numbers(tmp_path, monkeypatch, capsys, command, option, value):
    from tiny_gpt.commands import main
    monkeypatch.chdir(tmp_path)  # nothing may be written: the check comes before the command runs
    assert main([command, *REQUIRED.get(command, []), f"{option}={value}"]) == 2  # -inf: not an option
    err = capsys.readouterr().err
    assert err == f"tiny-gpt: error: {option} must be a finite number, got {float(value)}\n", err
    assert list(tmp_path.iterdir()) == []


def test_the_float_options_are_the_ones_we_know():
    "A new float option is covered by the test above; this list only shows which ones it covers."
    assert set(float_options()) == {("prepare", "--val-fraction"), ("prepare", "--chunk-mb"), ("train", "--lr"),
                                    ("train", "--min-lr"), ("train", "--weight-decay"), ("train", "--grad-clip"),
                                    ("generate", "--temperature"), ("finetune-classifier", "--val-fraction"),
                                    ("finetune-classifier", "--lora-alpha"), ("finetune-classifier", "--lr"),
                                    ("finetune-instruct", "--lora-alpha"), ("finetune-instruct", "--lr"),
                                    ("chat", "--temperature"), ("score", "--timeout")}


@pytest.mark.parametrize("content", [b"Some notes, not weights.\n", b"", bytes(range(256))],
                         ids=["text", "empty", "binary"])
def test_generate_with_a_file_that_is_not_weights_is_one_line(tmp_path, content):
    "Today's trap: `tiny-gpt generate hello --weights some.txt` ended in torch.load's pickle error."
    (tmp_path / "some.txt").write_bytes(content)
    out = run_here("generate", "hello", "--weights", tmp_path / "some.txt", "--device", "cpu")
    assert_one_line_error(out, "--weights 'some.txt' is not a weights file", "model.safetensors")
    assert out.stdout == ""


def test_generate_with_weights_that_name_nothing_is_one_line(tmp_path):
    out = run_here("generate", "hello", "--weights", tmp_path / "gpt-2", "--device", "cpu")
    assert_one_line_error(out, "no file or folder at", "not a GPT-2 name: choose one of gpt2")


# ---------------------------------------------------------------- GPT-2 by name: tiny-gpt download, --weights gpt2

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's name in the cache: any 40 hex digits


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    "A Hugging Face cache (HF_HOME) whose `gpt2` is a small random GPT2LMHeadModel, and that model."
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    import torch
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)  # off the initial values
    home = tmp_path_factory.mktemp("hf")
    repo = home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / HUB_COMMIT
    model.save_pretrained(snapshot, safe_serialization=True)  # config.json + model.safetensors
    (snapshot / "generation_config.json").unlink(missing_ok=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HUB_COMMIT)
    return home, model


def hub_env(home: Path) -> dict:
    return dict(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_HUB_OFFLINE="1")


def test_download_finds_the_cached_copy_offline(hub_cache):
    home, _ = hub_cache
    out = run("download", "gpt2", **hub_env(home))
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder == home / "hub" / "models--gpt2" / "snapshots" / HUB_COMMIT
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert run("download", "124M", **hub_env(home)).stdout == out.stdout  # the book's name for the same model


def test_download_offline_without_a_copy_is_one_line(tmp_path):
    pytest.importorskip("huggingface_hub")
    out = run("download", "gpt2", **hub_env(tmp_path / "hf"))
    assert_one_line_error(out, "GPT-2 'gpt2'", "not in the Hugging Face cache", "`tiny-gpt download gpt2`")
    assert out.stdout == ""
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written
    assert_one_line_error(run("download", "gpt3", **hub_env(tmp_path / "hf")), "unknown GPT-2 'gpt3'")


def test_generate_with_weights_by_name_writes_transformers_greedy_tokens(hub_cache):
    import torch
    from tiny_gpt.tokenizers import TikTokenizer
    home, model = hub_cache
    tok = TikTokenizer("gpt2")
    prompt = "Every effort moves you"
    ids = torch.tensor([tok.encode(prompt)])
    expected = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0,
                              eos_token_id=tok.eot_token)[0].tolist()
    if expected[-1] == tok.eot_token: expected = expected[:-1]  # the end token is not printed
    out = run("generate", "--weights", "gpt2", prompt, "--max-new-tokens", 10, "--device", "cpu", **hub_env(home))
    assert out.returncode == 0, out.stderr
    assert out.stdout == tok.decode(expected) + "\n"
    assert "random" not in out.stderr  # the shape came from the folder's config.json: 2 blocks of 64


def test_generate_with_weights_by_name_offline_without_a_copy_is_one_line(tmp_path):
    pytest.importorskip("huggingface_hub")
    out = run("generate", "--weights", "gpt2", "Hi", "--device", "cpu", **hub_env(tmp_path / "hf"))
    assert_one_line_error(out, "--weights gpt2:", "`tiny-gpt download gpt2` fetches it")
