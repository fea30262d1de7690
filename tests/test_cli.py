"""The `tiny-gpt` console command, run as a user runs it: the installed script, in a separate process."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = shutil.which("tiny-gpt", path=str(Path(sys.executable).parent)) or shutil.which("tiny-gpt")
DATA = Path(os.environ.get("TINY_GPT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_verdict = pytest.mark.skipif(not (DATA / "the-verdict.txt").is_file(), reason=f"no the-verdict.txt in {DATA}")


def run(*args, exe=None, **env):
    "Run `tiny-gpt args` (or `exe args`) with extra environment variables; return the CompletedProcess."
    merged = {**os.environ, "PYTHONIOENCODING": "utf-8", **env}
    return subprocess.run([*(exe or [EXE]), *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          env=merged, timeout=300, stdin=subprocess.DEVNULL)


def offline_env(folder: Path) -> dict:
    "Environment with no data folder, an empty cache and no network: The Verdict cannot be had."
    return dict(TINY_GPT_DATA=str(folder / "data"), TINY_GPT_CACHE=str(folder / "cache"), TINY_GPT_OFFLINE="1")


def test_console_script_is_installed():
    assert EXE and Path(EXE).exists(), "`pip install -e .` installs the tiny-gpt command next to python"


@pytest.fixture(scope="module")
def verdict_run():
    start = time.perf_counter()
    out = run("demo", TINY_GPT_DATA=str(DATA))
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    print(f"tiny-gpt demo on The Verdict: {seconds:.1f} s")
    return out, seconds


SEED_VALUES = [
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
    "✅ Stage 2 pipeline ran end to end",
]


@needs_verdict
@pytest.mark.parametrize("expected", SEED_VALUES)
def test_demo_prints_the_seed_values(verdict_run, expected):
    assert expected in verdict_run[0].stdout


@needs_verdict
def test_demo_report_is_short_sectioned_and_quick(verdict_run):
    out, seconds = verdict_run
    assert out.stderr == ""
    headers = [l for l in out.stdout.splitlines() if l.startswith(("Stage 1:", "Part A:", "Part B:", "Input embeddings:"))]
    assert len(headers) == 5, headers
    assert len(out.stdout.splitlines()) < 150      # a preview of the split, not the whole story
    assert "no exterminating our kind of art" not in out.stdout  # the story's last line is not printed
    assert "The Verdict is not available" not in out.stdout
    assert seconds < 60, seconds


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


def test_demo_falls_back_to_the_sample_text_offline(tmp_path):
    from tiny_gpt.io import SAMPLE_TEXT
    from tiny_gpt.tokenizers import RegexTokenizer, TikTokenizer
    (tmp_path / "data").mkdir()
    out = run("demo", **offline_env(tmp_path))
    assert out.returncode == 0, out.stderr
    notes = [l for l in out.stdout.splitlines() if "The Verdict" in l]
    assert len(notes) == 1 and "running on the sample text shipped with tiny_gpt" in notes[0], notes
    assert f"Total Tokens: {len(RegexTokenizer(SAMPLE_TEXT).create_vocabulary())}" in out.stdout
    import torch
    ids = TikTokenizer().encode(SAMPLE_TEXT)
    assert f"Stride = 1\nFirst Batch\n{[torch.tensor([ids[0:4]]), torch.tensor([ids[1:5]])]}\n" in out.stdout
    assert "✅ Stage 2 pipeline ran end to end" in out.stdout
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing downloaded


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
    out = run("demo", make(tmp_path))
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


try: from tiny_gpt import store
except ImportError: store = None
needs_store = pytest.mark.skipif(store is None, reason="the token store stage (tiny_gpt.store) is not there yet")


@needs_store
def test_prepare_round_trip(tmp_path):
    import numpy as np
    from tiny_gpt.tokenizers import TikTokenizer
    text = "The keeper climbed the steps and lit the lamp.\nThe sea was rough that night.\n"
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    out = run("prepare", tmp_path / "doc.txt", "--out", tmp_path / "store", "--workers", 0)
    assert out.returncode == 0, out.stderr
    assert "wrote shard 0/1" in out.stdout
    tok = TikTokenizer()
    opened = store.open_store(tmp_path / "store")
    ids = np.concatenate(opened.shards).tolist()
    assert ids == tok.encode(text) + [tok.eot_token]  # one document, closed by <|endoftext|>
    demo = run("demo", tmp_path / "doc.txt")  # and the same text is too short for the demo: a clear error
    assert demo.returncode == 2 and "the demo needs at least 26" in demo.stderr


@needs_store
def test_prepare_errors_are_one_line(tmp_path):
    out = run("prepare", tmp_path / "nope.txt", "--out", tmp_path / "store")
    assert out.returncode == 2 and out.stderr.startswith("tiny-gpt: error: ") and "Traceback" not in out.stderr
    assert "nope.txt" in out.stderr


BROKEN_STORE = """
import sys, importlib.abc
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tiny_gpt.store": raise SyntaxError("simulated: tiny_gpt/store.py is broken")
sys.meta_path.insert(0, Broken())
from tiny_gpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_broken_store_stage_does_not_break_demo(tmp_path):
    exe = [sys.executable, "-c", BROKEN_STORE]
    out = run("prepare", "x.txt", "--out", tmp_path, exe=exe)
    assert out.returncode == 1 and "prepare needs the token store stage" in out.stderr
    assert "SyntaxError: simulated" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "data").mkdir()
    out = run("demo", exe=exe, **offline_env(tmp_path))
    assert out.returncode == 0 and "✅ Stage 2 pipeline ran end to end" in out.stdout, out.stderr
