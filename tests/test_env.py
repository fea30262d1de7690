"""What the env notebook cannot show from inside: its `#| cuda` cell run the way CI and a GPU owner run it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _nbdev_test(*flags: str) -> subprocess.CompletedProcess:
    exe = shutil.which("nbdev_test") or str(Path(sys.executable).parent / "nbdev_test")
    return subprocess.run([exe, "--path", str(ROOT / "nbs" / "00_env.ipynb"), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_cuda_cell_fails_without_a_gpu_and_passes_with_one():
    "Under `--flags cuda` a missing GPU is an error (never a silent skip); with a GPU the cell's checks pass."
    out = _nbdev_test("--flags", "cuda")
    if torch.cuda.is_available():
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        assert out.returncode != 0
        assert "this #| cuda cell needs a CUDA GPU and none is available" in out.stdout + out.stderr
