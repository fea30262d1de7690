"""What the io notebook says badly: a real HTTP download on loopback, and a writer killed mid-write."""
import functools
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tiny_gpt.io import (VERDICT_NAME, VERDICT_SHA256, CorpusNotAvailableError, find_default_corpus,
                         io_load_text_file, sha256_file)

DATA = Path(os.environ.get("TINY_GPT_DATA", Path(__file__).parents[2] / "shared" / "data"))


@pytest.fixture
def server(tmp_path):
    "A static file server on 127.0.0.1 serving tmp_path/www; yields its base URL."
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    "An empty data folder and an empty cache, network allowed."
    monkeypatch.setenv("TINY_GPT_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("TINY_GPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINY_GPT_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_download_over_http_fills_the_cache_once(server, sandbox):
    www, url = server
    (www / VERDICT_NAME).write_bytes((DATA / VERDICT_NAME).read_bytes())
    path = find_default_corpus(url=f"{url}/{VERDICT_NAME}")
    assert path == sandbox / VERDICT_NAME and sha256_file(path) == VERDICT_SHA256
    (www / VERDICT_NAME).unlink()  # the server forgets it: the cached copy must be used
    assert io_load_text_file(verbose=False) == (DATA / VERDICT_NAME).read_text(encoding="utf-8")


def test_http_404_gives_the_corpus_error(server, sandbox):
    _, url = server
    with pytest.raises(CorpusNotAvailableError, match="set TINY_GPT_DATA"):
        find_default_corpus(url=f"{url}/missing.txt")
    assert not sandbox.exists() or not any(sandbox.iterdir())


def test_wrong_bytes_from_the_server_leave_no_file(server, sandbox):
    www, url = server
    (www / VERDICT_NAME).write_bytes((DATA / VERDICT_NAME).read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected " + VERDICT_SHA256):
        find_default_corpus(url=f"{url}/{VERDICT_NAME}")
    assert not (sandbox / VERDICT_NAME).exists()


def test_offline_switch_never_downloads(sandbox, monkeypatch):
    monkeypatch.setenv("TINY_GPT_OFFLINE", "1")
    with pytest.raises(CorpusNotAvailableError, match="TINY_GPT_OFFLINE"):
        io_load_text_file()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_writer_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "store.bin"
    script = textwrap.dedent(f"""
        import time
        from tiny_gpt.io import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b"x" * 1_000_000); f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".store.bin.") and p.name.endswith(".tmp") for p in leftovers)


def test_the_loader_never_prints_an_absolute_path(tmp_path, monkeypatch, capsys):
    "Notebook outputs and logs name the corpus relative to TINY_GPT_DATA or the cache, not the folders above it."
    data, cache = tmp_path / "data", tmp_path / "cache"
    (data / "more").mkdir(parents=True)
    (data / VERDICT_NAME).write_bytes((DATA / VERDICT_NAME).read_bytes())
    (data / "more" / "notes.txt").write_text("a note\n", encoding="utf-8")
    (cache / "sub").mkdir(parents=True)
    (cache / "sub" / "c.txt").write_text("cached\n", encoding="utf-8")
    monkeypatch.setenv("TINY_GPT_DATA", str(data))
    monkeypatch.setenv("TINY_GPT_CACHE", str(cache))
    io_load_text_file()
    io_load_text_file(data / "more" / "notes.txt")
    io_load_text_file(cache / "sub" / "c.txt")
    out = capsys.readouterr().out
    assert str(tmp_path) not in out
    assert [line for line in out.splitlines() if line.startswith("Loaded")] == [
        "Loaded 'the-verdict.txt' successfully: 20,479 characters",
        f"Loaded '{Path('more', 'notes.txt')}' successfully: 7 characters",
        f"Loaded '{Path('sub', 'c.txt')}' successfully: 7 characters"]
