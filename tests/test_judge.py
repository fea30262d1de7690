"""The judge protocol of chapter 10: `query_model`, `judge_responses` and the book's `generate_model_scores`
against a small HTTP server started here on 127.0.0.1 (a free port), answering as Ollama does (/api/chat,
streamed JSON lines) and as an OpenAI-compatible server does (/v1/chat/completions) — and answering badly:
malformed lines, missing fields, words instead of numbers, HTTP errors, silence, a broken-off stream.
Only 127.0.0.1 is ever contacted."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tiny_gpt.instruct import (JUDGE_OPTIONS, OLLAMA_URL, JudgeError, JudgeReport, format_input,
                               generate_model_scores, judge_prompt, judge_responses, parse_score, query_model)

ENTRIES = [{"instruction": f"Say {n}.", "input": "", "output": f"{n}", "model_response": f"{n}"}
           for n in ("one", "two", "three")]


class Judge(BaseHTTPRequestHandler):
    "Answers with what the test put in `server.replies` (one per request, the last repeated)."
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        reply = self.server.replies[min(len(self.server.requests), len(self.server.replies)) - 1]
        if callable(reply): return reply(self)
        status, chunks = reply
        self.send_response(status)
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()

    def log_message(self, *args): pass


@pytest.fixture
def judge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)  # only this computer's own address
    server.requests, server.replies, server.daemon_threads = [], [], True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    server.ollama = f"http://127.0.0.1:{server.server_port}/api/chat"
    server.openai = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    yield server
    server.shutdown()
    server.server_close()


def ollama(*pieces: str) -> tuple[int, list[bytes]]:
    "Ollama's streamed reply: one JSON line per piece, then a `done` line."
    lines = [json.dumps({"model": "llama3", "message": {"role": "assistant", "content": p}, "done": False})
             for p in pieces]
    lines.append(json.dumps({"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": True}))
    return 200, [(line + "\n").encode() for line in lines]


def openai(text: str) -> tuple[int, list[bytes]]:
    return 200, [json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()]


def closed_port_url() -> str:
    "An address on 127.0.0.1 where nobody listens."
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}/api/chat"


# --- one question --------------------------------------------------------------------------------------

def test_ollama_streams_json_lines_joined_with_the_books_options(judge):
    judge.replies = [ollama("8", "5")]
    assert query_model("How good?", model="llama3:8b", url=judge.ollama) == "85"
    path, body = judge.requests[0]
    assert path == "/api/chat"
    assert body == {"model": "llama3:8b", "messages": [{"role": "user", "content": "How good?"}],
                    "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}
    assert JUDGE_OPTIONS == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    assert OLLAMA_URL == "http://localhost:11434/api/chat"  # the book's default


def test_openai_compatible_servers_get_one_json_answer(judge):
    judge.replies = [openai(" 42 ")]
    assert query_model("How good?", model="m", url=judge.openai) == " 42 "
    path, body = judge.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {"model": "m", "messages": [{"role": "user", "content": "How good?"}], "seed": 123,
                    "temperature": 0, "stream": False}


@pytest.mark.parametrize("reply, message", [
    ((200, [b"not json\n"]), "line 1 from"),
    ((200, [b'{"message": {"role": "assistant", "content": "4"}}\n', b'{"done": true}\n']), "line 2 from"),
    ((200, [b'{"message": "85"}\n']), "is not an Ollama chat message"),
    ((200, [b"[1, 2]\n"]), "is not an Ollama chat message"),
])
def test_a_malformed_ollama_stream_is_a_bad_reply(judge, reply, message):
    judge.replies = [reply]
    with pytest.raises(JudgeError) as info: query_model("?", url=judge.ollama)
    assert info.value.kind == "bad reply" and message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("reply", [(200, [b"{}"]), (200, [b'{"choices": []}']), (200, [b"<html>"]),
                                   (200, [b'{"choices": [{"text": "85"}]}'])])
def test_a_malformed_openai_answer_is_a_bad_reply(judge, reply):
    judge.replies = [reply]
    with pytest.raises(JudgeError, match="did not answer an OpenAI chat completion") as info:
        query_model("?", url=judge.openai)
    assert info.value.kind == "bad reply"


def test_an_http_error_is_a_server_error_with_the_servers_words(judge):
    judge.replies = [(404, [b'{"error": "model \'llama3\' not found, try pulling it first"}'])]
    with pytest.raises(JudgeError) as info: query_model("?", url=judge.ollama)
    assert info.value.kind == "server error"
    assert "HTTP 404" in str(info.value) and "not found, try pulling it first" in str(info.value)


def test_nobody_listening_is_unreachable():
    url = closed_port_url()
    with pytest.raises(JudgeError) as info: query_model("?", url=url)
    assert info.value.kind == "unreachable" and url in str(info.value) and "is the server running?" in str(info.value)


def test_a_silent_server_is_a_timeout(judge):
    judge.replies = [lambda handler: time.sleep(2)]
    start = time.perf_counter()
    with pytest.raises(JudgeError) as info: query_model("?", url=judge.ollama, timeout=0.3)
    assert info.value.kind == "timeout" and "within 0.3 s" in str(info.value)
    assert time.perf_counter() - start < 1.9


def test_a_stream_that_stops_midway_is_a_timeout(judge):
    def stall(handler):
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(b'{"message": {"role": "assistant", "content": "8"}}\n')
        handler.wfile.flush()
        time.sleep(2)
    judge.replies = [stall]
    with pytest.raises(JudgeError) as info: query_model("?", url=judge.ollama, timeout=0.3)
    assert info.value.kind == "timeout"


def test_a_connection_closed_without_an_answer_is_a_bad_reply(judge):
    def hang_up(handler):
        handler.close_connection = True
        handler.request.shutdown(socket.SHUT_RDWR)
    judge.replies = [hang_up]
    with pytest.raises(JudgeError) as info: query_model("?", url=judge.ollama)
    assert info.value.kind in ("bad reply", "unreachable")
    assert "\n" not in str(info.value)


# --- scores ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, score", [("85", 85), ("0", 0), ("100", 100), (" 7\n", 7), ("042", 42)])
def test_parse_score_reads_an_integer_from_0_to_100(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["101", "-1", "85.0", "85%", "Score: 85", "85 out of 100", "", "   ",
                                   "eighty-five", "8 5", "1000"])
def test_parse_score_names_anything_else(reply):
    with pytest.raises(JudgeError) as info: parse_score(reply)
    assert info.value.kind == "not a score" and "is not an integer from 0 to 100" in str(info.value)


def test_the_judge_prompt_is_the_books():
    entry = {"instruction": "Rewrite.", "input": "x", "output": "y", "model_response": "z"}
    assert judge_prompt(entry, "model_response") == (
        f"Given the input `{format_input(entry)}` and correct output `y`, score the model response `z` "
        "on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only.")


def test_a_report_counts_and_names_every_failure_and_averages_only_the_scored(judge):
    judge.replies = [ollama("90"), ollama("I would give it a high score."), openai("x"),
                     (500, [b"internal error"]), ollama("70")]
    report = judge_responses(ENTRIES + ENTRIES[:2], url=judge.ollama)
    assert report.scores == [90, None, None, None, 70]
    assert report.mean == 80 and report.scored == [90, 70]
    assert report.failures[1].startswith("not a score: the reply 'I would give it a high score.'")
    assert report.failures[2].startswith("bad reply: line 1 from")  # an OpenAI answer on Ollama's path
    assert report.failures[3].startswith("server error: ") and "HTTP 500" in report.failures[3]
    assert str(report) == "mean 80.00 over 2 of 5 scored (not scored: 1 not a score; 1 bad reply; 1 server error)"
    prompts = [body["messages"][0]["content"] for _, body in judge.requests]
    assert prompts == [judge_prompt(e, "model_response") for e in ENTRIES + ENTRIES[:2]]


def test_nothing_scored_is_no_mean_never_a_zero(judge):
    judge.replies = [ollama("great")]
    report = judge_responses(ENTRIES, url=judge.ollama)
    assert report.mean is None and report.scored == [] and len(report.failures) == 3
    assert str(report) == "no mean over 0 of 3 scored (not scored: 3 not a score)"


def test_an_unreachable_judge_is_asked_once_and_every_entry_counted():
    url = closed_port_url()
    start = time.perf_counter()
    report = judge_responses(ENTRIES * 20, url=url)
    assert time.perf_counter() - start < 5
    assert report.scores == [None] * 60 and report.mean is None
    assert report.failures[0].startswith("unreachable: ") and report.failures[59].startswith("unreachable: not asked")
    assert str(report) == "no mean over 0 of 60 scored (not scored: 60 unreachable)"


def test_timeouts_are_counted_and_the_rest_still_asked(judge):
    judge.replies = [lambda handler: time.sleep(1.5), ollama("60")]
    report = judge_responses(ENTRIES, url=judge.ollama, timeout=0.3)
    assert report.scores == [None, 60, 60] and report.failures[0].startswith("timeout: ")


def test_the_books_generate_model_scores_returns_the_scores_it_read(judge, capsys):
    judge.replies = [openai("50"), openai("fifty"), openai("100")]
    scores = generate_model_scores(ENTRIES, "model_response", model="judge", url=judge.openai)
    assert scores == [50, 100]
    out = capsys.readouterr().out
    assert out == "Could not score entry 1: not a score: the reply 'fifty' is not an integer from 0 to 100\n"
    assert all(body["model"] == "judge" for _, body in judge.requests)


def test_an_empty_report():
    assert str(JudgeReport([])) == "no mean over 0 of 0 scored"
