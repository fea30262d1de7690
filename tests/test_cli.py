"""The `tiny-gpt` console command, run as a user runs it: in a separate process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("tiny-gpt") or str(Path(sys.executable).parent / "tiny-gpt")
DATA = Path(os.environ.get("TINY_GPT_DATA", Path(__file__).parents[2] / "shared" / "data"))


def run(*args, **env):
    "Run `tiny-gpt args` with extra environment variables; return the CompletedProcess."
    merged = {**os.environ, "PYTHONIOENCODING": "utf-8", **env}
    return subprocess.run([EXE, *args], capture_output=True, text=True, encoding="utf-8", env=merged,
                          timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def verdict_report():
    out = run("demo", TINY_GPT_DATA=str(DATA))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_console_script_is_installed():
    assert Path(EXE).exists(), "pip install -e . installs the tiny-gpt command"


@pytest.mark.parametrize("expected", [
    "Tokens     : [7454, 2402, 257, 640, 287, 20443, 38, 11571, 986]",
    f"Loaded '{DATA / 'the-verdict.txt'}' successfully: 20,479 characters",
    "📘 Vocabulary: 1132 tokens",
    "🔢 Encoded IDs : [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]",
    "Encoded IDs  : [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 262, 20562, 13]",
    "[tensor([[ 367, 2885, 1464, 1807]]), tensor([[2885, 1464, 1807, 3619]])]",
    "Total tokens present in the vocabulary: 50257",
    "Final input embeddings shape: torch.Size([8, 4, 256])",
    "✅ Stage 2 pipeline ran end to end",
])
def test_demo_prints_the_seed_values(verdict_report, expected):
    assert expected in verdict_report


def test_demo_on_a_given_file(tmp_path):
    story = tmp_path / "story.txt"
    story.write_text("The cat sat on the mat. " * 40, encoding="utf-8")
    out = run("demo", str(story))
    assert out.returncode == 0, out.stderr
    import torch
    from tiny_gpt.tokenizers import TikTokenizer
    ids = TikTokenizer().encode(story.read_text(encoding="utf-8"))
    first_batch = str([torch.tensor([ids[0:4]]), torch.tensor([ids[1:5]])])
    assert f"Loaded '{story}'" in out.stdout and f"First Batch\n{first_batch}" in out.stdout


def test_demo_falls_back_to_the_sample_text_offline(tmp_path):
    out = run("demo", TINY_GPT_DATA=str(tmp_path), TINY_GPT_CACHE=str(tmp_path / "cache"), TINY_GPT_OFFLINE="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("The Verdict is not available") == 1
    assert "running on the sample text shipped with tiny_gpt" in out.stdout
    assert "✅ Stage 2 pipeline ran end to end" in out.stdout


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.txt", "No such file"),
    (lambda p: p, "is a directory"),
    (lambda p: (p / "latin1.txt").write_bytes("caf\xe9".encode("latin-1")) and p / "latin1.txt", "not valid UTF-8"),
    (lambda p: (p / "short.txt").write_text("Too short.", encoding="utf-8") and p / "short.txt", "max_length=4 needs at least 5"),
])
def test_bad_files_give_one_line_and_status_2(tmp_path, make, message):
    out = run("demo", str(make(tmp_path)))
    assert out.returncode == 2
    assert out.stderr.startswith("tiny-gpt: error: ") and message in out.stderr
    assert "Traceback" not in out.stderr


def test_version_and_usage():
    from tiny_gpt import __version__
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tiny_gpt {__version__}"
    out = run()
    assert out.returncode == 2 and "usage: tiny-gpt" in out.stderr
