"""The commands of chapter 10a, as a user runs them: `tiny-gpt finetune-instruct`, `tiny-gpt chat` (the installed
script in a real pipe, interrupted with SIGINT, ended by end of input) and `tiny-gpt score` (offline, and against
the stand-in Ollama server of test_judge.py on 127.0.0.1; nothing else is contacted). Every bad input: exit 2, one
line on standard error, nothing written. The data are made up here: no data file is needed."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny_gpt.chat as chat
from tiny_gpt.chat import answer, chat_session, pipe_entries, stream_ids, stream_text, terminal_entries
from tiny_gpt.commands import main
from tiny_gpt.instruct import format_input, instruct_model_from_checkpoint, rouge_l_score
from tiny_gpt.model import generate
from test_judge import Judge, closed_port_url, judge, ollama  # noqa: F401 (judge: the server fixture)

EXE = shutil.which("tiny-gpt", path=str(Path(sys.executable).parent)) or shutil.which("tiny-gpt")
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "red", "blue"]
ENTRIES = [{"instruction": f"Say {w}.", "input": "" if i % 3 else f"{w} {w}", "output": f"{w.capitalize()}."}
           for i, w in enumerate(WORDS)] * 2  # 24 entries: 23 to train on, 1 to validate
FAST = ["--device", "cpu", "--quiet", "--batch-size", "4", "--epochs", "1"]


def finetune(data, out, *options) -> int:
    return main(["finetune-instruct", str(data), "--out", str(out), *FAST, *map(str, options)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    "The entries as JSON Lines (input left out where empty) and as the book's JSON list, and a run of them."
    tmp = tmp_path_factory.mktemp("chat")
    lines = [{k: v for k, v in e.items() if v or k != "input"} for e in ENTRIES]
    (tmp / "data.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n", encoding="utf-8")
    (tmp / "data.json").write_text(json.dumps(ENTRIES, indent=2), encoding="utf-8")
    torch.set_num_threads(1)
    assert finetune(tmp / "data.jsonl", tmp / "run") == 0
    return tmp


# --- finetune-instruct ----------------------------------------------------------------------------------

def test_json_and_json_lines_train_the_same_run(files):
    assert finetune(files / "data.json", files / "from_json") == 0
    a, b = (torch.load(files / run / "checkpoint.pt") for run in ("run", "from_json"))
    assert a["task"]["data"] == b["task"]["data"]  # the same entries once read
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["position"]["step"] == 23 // 4 and a["task"]["name"] == "instruction"


def test_a_stopped_run_resumed_equals_an_uninterrupted_one_with_lora_and_masking(files):
    extra = ["--lora-rank", "4", "--mask-instruction", "--epochs", "2"]
    assert finetune(files / "data.jsonl", files / "whole", *extra) == 0
    assert finetune(files / "data.jsonl", files / "stopped", *extra, "--stop-after", "3") == 0
    stopped = torch.load(files / "stopped" / "checkpoint.pt")
    assert stopped["position"]["step"] == 3 and stopped["history"]["stopped_at"]["reason"] == "stop_after"
    resume = ["finetune-instruct", str(files / "data.jsonl"), "--out", str(files / "stopped"), "--resume"]
    assert main([*resume, "--device", "cpu", "--quiet"]) == 0  # every option left out: the run's own
    whole, resumed = (torch.load(files / run / "checkpoint.pt") for run in ("whole", "stopped"))
    assert resumed["position"]["step"] == whole["position"]["step"] == 10
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])  # bit for bit
    assert whole["task"]["lora"] == {"rank": 4, "alpha": 4.0} and whole["task"]["mask_instruction"] is True
    model, _, _ = instruct_model_from_checkpoint(files / "whole")
    assert sum(".lora." in n for n, _ in model.named_parameters()) > 0


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "2"], "--batch-size 2 differs from the resumed run's (4)"),
    (["--lr", "0.1"], "--lr 0.1 differs from the resumed run's (0.005)"),
    (["--seed", "7"], "--seed 7 differs from the resumed run's (123)"),
    (["--lora-rank", "2"], "--lora-rank 2 differs from the resumed run's (None)"),
    (["--mask-instruction"], "--mask-instruction True differs"),
    (["--max-length", "64"], "--max-length 64 differs from the resumed run's (128)"),
    (["--weights", "gpt2"], "leave out --weights and --checkpoint"),
])
def test_resuming_with_another_training_option_is_refused(files, capsys, options, message):
    "Given with --resume, an option must equal the run's: it is refused, never silently ignored."
    before = (files / "run" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert finetune(files / "data.jsonl", files / "run", "--resume", *options) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("tiny-gpt: error: "), err
    assert (files / "run" / "checkpoint.pt").read_bytes() == before


def test_resuming_on_other_data_is_refused_but_its_json_lines_copy_is_the_same(files, capsys):
    before = (files / "run" / "checkpoint.pt").read_bytes()
    (files / "fewer.jsonl").write_text("\n".join(json.dumps(e) for e in ENTRIES[:20]))
    capsys.readouterr()
    assert finetune(files / "fewer.jsonl", files / "run", "--resume") == 2
    err = capsys.readouterr().err
    assert "holds other entries than the run in" in err and err.count("\n") == 1
    assert (files / "run" / "checkpoint.pt").read_bytes() == before
    shutil.copytree(files / "run", files / "same")  # the run was on data.jsonl: its JSON list is the same data
    assert finetune(files / "data.json", files / "same", "--resume", "--batch-size", "4", "--lr", "0.005") == 0


def test_resume_with_epochs_extends_a_finished_run_bit_for_bit(files):
    "--epochs on --resume is read: a 1-epoch run resumed with --epochs 2 equals a 2-epoch run."
    assert finetune(files / "data.jsonl", files / "two", "--epochs", "2") == 0
    shutil.copytree(files / "run", files / "extended")  # FAST: one epoch, finished
    assert finetune(files / "data.jsonl", files / "extended", "--resume", "--epochs", "2") == 0
    two, extended = (torch.load(files / run / "checkpoint.pt") for run in ("two", "extended"))
    assert extended["position"]["step"] == two["position"]["step"] == 2 * (23 // 4)
    assert all(torch.equal(two["model"][k], extended["model"][k]) for k in two["model"])


def test_an_entry_longer_than_the_context_is_cut_with_a_note(files, capsys):
    long = [*ENTRIES, {"instruction": "Say " + " ".join(WORDS * 6), "input": "", "output": "Ten."}]
    (files / "long.json").write_text(json.dumps(long))
    capsys.readouterr()
    assert finetune(files / "long.json", files / "long", "--max-length", "64") == 0
    err = capsys.readouterr().err
    assert "note: 1 of 25 entries are longer than 64 tokens: cut to 64" in err
    assert (files / "long" / "checkpoint.pt").is_file()


BAD_FILES = {
    "empty.json": ("", "is empty"),
    "blank.jsonl": ("\n\n", "is empty"),
    "notjson.json": ("[{'instruction': 1}]", "is not JSON"),
    "words.jsonl": ('{"instruction": "a", "output": "b"}\nnot json\n', "line 2 is not JSON"),
    "object.json": ('{"instruction": "a", "output": "b"', "line 1 is not JSON"),
    "nooutput.jsonl": ('{"instruction": "a"}\n', "entry 0 lacks output"),
    "number.json": ('[{"instruction": "a", "input": "", "output": 5}]', "has output of type int"),
    "emptylist.json": ("[]", "holds an empty list"),
    "notalist.jsonl": ("[1, 2]", "entry 0 is a int"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_file_that_is_not_the_layout_is_one_line_and_writes_nothing(files, capsys, name):
    content, message = BAD_FILES[name]
    (files / name).write_text(content)
    capsys.readouterr()
    assert finetune(files / name, files / "bad_out") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("tiny-gpt: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err and captured.out == ""
    assert captured.err.rstrip("\n").endswith(chat.LAYOUT)  # this reader's layout, not chapter 10's list
    assert not (files / "bad_out").exists()


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "30"], "lower --batch-size"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--lora-rank", "0"], "--lora-rank must be >= 1"),
    (["--max-length", "999"], "--max-length must be in [1, 128]"),
    (["--weights", "gpt2", "--checkpoint", "RUN"], "pass one of them"),
    (["--weights", "no-such-gpt"], "not a GPT-2 name"),
    (["--resume"], "no checkpoint at"),
])
def test_bad_options_are_one_line_and_write_nothing(files, capsys, options, message):
    capsys.readouterr()
    assert finetune(files / "data.jsonl", files / "bad_out", *options) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("tiny-gpt: error:"), err
    assert not (files / "bad_out").exists()


def test_an_existing_run_is_not_overwritten(files, capsys):
    before = (files / "run" / "checkpoint.pt").read_bytes()
    assert finetune(files / "data.jsonl", files / "run") == 2
    assert "holds another run" in capsys.readouterr().err
    assert (files / "run" / "checkpoint.pt").read_bytes() == before


# --- chat -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(files):
    m, tokenizer, _ = instruct_model_from_checkpoint(files / "run")
    return m, tokenizer


def test_stream_ids_yields_generates_tokens_one_at_a_time(model):
    m, tok = model
    ids = tok.encode(format_input(ENTRIES[0]))
    stream = stream_ids(m, ids, max_new_tokens=30)
    first = next(stream)  # there before the rest is computed
    whole = generate(m, torch.tensor([ids]), 30, m.cfg["context_length"])[0, len(ids):].tolist()
    assert [first, *stream] == whole
    sampled = [list(stream_ids(m, ids, 10, temperature=1.0, top_k=5)) for _ in range(2)]
    torch.manual_seed(0); a = list(stream_ids(m, ids, 10, temperature=1.0, top_k=5))
    torch.manual_seed(0); b = list(stream_ids(m, ids, 10, temperature=1.0, top_k=5))
    assert a == b and all(len(s) == 10 for s in sampled)


def test_a_long_answer_slides_past_the_context(model):
    m, tok = model
    ids = tok.encode(format_input(ENTRIES[0]) + chat.RESPONSE_HEADING)
    n = m.cfg["context_length"]
    streamed = list(stream_ids(m, ids, n))  # prompt + answer longer than the context: the window slides
    assert streamed == generate(m, torch.tensor([ids]), n, n)[0, len(ids):].tolist()


def test_answers_stream_and_end_at_end_of_text(model):
    m, tok = model
    pieces = list(answer(m, tok, ENTRIES[0], max_new_tokens=60))
    ids = tok.encode(format_input(ENTRIES[0]) + chat.RESPONSE_HEADING)
    full = generate(m, torch.tensor([ids]), 60, 128, eos_id=tok.eot_token)[0, len(ids):].tolist()
    if tok.eot_token in full: full = full[:full.index(tok.eot_token)]
    assert "".join(pieces) == tok.decode(full).lstrip() and "<|endoftext|>" not in "".join(pieces)


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(model, monkeypatch):
    m, tok = model
    def interrupted(*args, **kw):
        yield "Half"
        raise KeyboardInterrupt
    calls = iter([interrupted, answer])
    monkeypatch.setattr(chat, "answer", lambda *a, **kw: next(calls)(*a, **kw))
    out = io.StringIO()
    done = chat_session(m, tok, [ENTRIES[0], ENTRIES[1]], out, max_new_tokens=5)
    first, second, rest = out.getvalue().split("\n")
    assert (done, first, rest) == (1, "Half [stopped]", "")
    assert second == "".join(answer(m, tok, ENTRIES[1], 5))


def test_readers_of_a_pipe_and_of_the_terminal(capsys):
    assert list(pipe_entries(["a\tb\n", "  \n", "\tx\n", "c\r\n"])) == [  # blank lines kept: answers line up
        {"instruction": "a", "input": "b"}, {"instruction": "", "input": ""}, {"instruction": "", "input": ""},
        {"instruction": "c", "input": ""}]
    replies = iter(["first", "", KeyboardInterrupt, "second", "in", EOFError])
    def ask(prompt):
        r = next(replies)
        if isinstance(r, type): raise r
        return r
    assert list(terminal_entries(ask)) == [{"instruction": "first", "input": ""},
                                           {"instruction": "second", "input": "in"}]


def tiny_gpt(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([EXE, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kw)


def test_chat_through_a_real_pipe_ends_with_status_0_at_end_of_input(files, model):
    m, tok = model
    p = tiny_gpt("chat", "--checkpoint", files / "run", "--max-new-tokens", "12", "--device", "cpu")
    out, err = p.communicate(b"Say two.\n\nSay one.\tone one\n", timeout=120)
    assert p.returncode == 0, err
    lines = out.decode("utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == lines[3] == ""  # line N answers line N; a blank line: an empty one
    expected = ["".join(answer(m, tok, e, 12)) for e in ({"instruction": "Say two.", "input": ""},
                                                         {"instruction": "Say one.", "input": "one one"})]
    assert [lines[0], lines[2]] == [a.replace("\\", "\\\\").replace("\n", "\\n") for a in expected]


def test_sigint_during_an_answer_stops_it_and_end_of_input_ends_with_0(files, model):
    m, tok = model
    prompt = {"instruction": "Say seven.", "input": ""}
    ids = tok.encode(format_input(prompt) + chat.RESPONSE_HEADING)
    assert tok.eot_token not in list(stream_ids(m, ids, 60)), "this test needs an answer that does not end"
    p = tiny_gpt("chat", "--checkpoint", files / "run", "--max-new-tokens", "100000", "--device", "cpu")
    p.stdin.write(b"Say seven.\n"); p.stdin.flush()
    first = os.read(p.stdout.fileno(), 64)  # streamed: text arrives while the answer is being written
    assert first
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)  # Ctrl-C
    p.stdin.close()  # then end of input (Ctrl-D)
    rest, err = p.stdout.read(), p.stderr.read()
    p.wait(timeout=60)
    assert p.returncode == 0, err
    assert (first + rest).decode("utf-8").endswith(" [stopped]\n") and b"Traceback" not in err


def test_sigint_while_a_pipe_waits_for_the_next_line_ends_the_chat_with_130(files):
    p = tiny_gpt("chat", "--checkpoint", files / "run", "--max-new-tokens", "4", "--device", "cpu")
    p.stdin.write(b"Say two.\n"); p.stdin.flush()
    assert p.stdout.readline().endswith(b"\n")  # answered: the chat now waits for the next line
    p.send_signal(signal.SIGINT)  # Ctrl-C between answers
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.decode().strip().endswith("tiny-gpt: interrupted"), err
    assert b"Traceback" not in err


def test_chat_bad_input_is_one_line(files, capsys):
    for args, message in ((["--checkpoint", files / "nothing"], "no checkpoint at"),
                          (["--checkpoint", files / "run", "--top-k", "0"], "--top-k >= 1"),
                          (["--checkpoint", files / "run", "--temperature", "-1"], "--temperature >= 0")):
        capsys.readouterr()
        assert main(["chat", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


# --- score ------------------------------------------------------------------------------------------------

@pytest.fixture
def responses(files):
    answered = [{**e, "model_response": e["output"] if i % 2 else "Nothing."} for i, e in enumerate(ENTRIES[:4])]
    path = files / "responses.json"
    path.write_text(json.dumps(answered, indent=4))
    return path, answered


def test_score_offline_with_the_response_loss(files, responses, capsys):
    path, answered = responses
    assert main(["score", str(path), "--checkpoint", str(files / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ROUGE-L: {rouge_l_score(answered):.3f} (mean over 4 responses)" and out[0].startswith("ROUGE-L: 0.500")
    assert out[1].startswith("response loss: ") and len(out) == 2


def test_score_with_a_judge_counts_and_names_failures(responses, judge, capsys):
    path, _ = responses
    judge.replies = [ollama("80"), ollama("I cannot"), ollama("6", "0"), ollama("101")]
    assert main(["score", str(path), "--judge", judge.ollama, "--judge-model", "stand-in"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "judge stand-in: mean 70.00 over 2 of 4 scored (not scored: 2 not a score)"
    assert out[2].startswith("  entry 1 not scored: not a score: the reply 'I cannot'")
    assert out[3].startswith("  entry 3 not scored: not a score: the reply '101'") and len(out) == 4
    assert all(body["model"] == "stand-in" for _, body in judge.requests)


def test_an_unreachable_judge_is_one_line_exit_2(responses, capsys):
    path, _ = responses
    url = closed_port_url()
    assert main(["score", str(path), "--judge", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "the judge is unreachable" in captured.err and url in captured.err and "leave out --judge" in captured.err


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('[{"instruction": "a", "input": "", "output": "b"}]', "has no text 'model_response'"),
    ('{"output": "b", "model_response": "c"}', "lacks instruction"),
])
def test_score_bad_files_are_one_line(files, capsys, content, message):
    (files / "bad_responses.json").write_text(content)
    assert main(["score", str(files / "bad_responses.json")]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""


def test_the_commands_are_listed_by_tiny_gpt(capsys):
    with pytest.raises(SystemExit): main(["--help"])
    help_text = capsys.readouterr().out
    assert all(f"    {c}" in help_text for c in ("finetune-instruct", "chat", "score"))


def test_finetune_from_a_train_run_and_from_a_finetune_run(files, capsys):
    text = files / "text.txt"
    text.write_text(" ".join(e["instruction"] + " " + e["output"] for e in ENTRIES) * 30, encoding="utf-8")
    common = ["--device", "cpu", "--quiet", "--max-steps", "1", "--eval-iters", "1", "--batch-size", "2"]
    assert main(["train", str(text), "--out", str(files / "pre"), *common]) == 0
    assert main(["train", str(text), "--out", str(files / "pre_char"), "--tokenizer", "char", *common]) == 0
    capsys.readouterr()
    assert finetune(files / "data.jsonl", files / "from_pre", "--checkpoint", files / "pre") == 0
    err = capsys.readouterr().err
    assert "no --weights" not in err  # the run's model: no note
    model, tok, info = instruct_model_from_checkpoint(files / "from_pre")
    assert tok.get_n_vocab_tokens() == 50257 and model.cfg["context_length"] == 64
    assert finetune(files / "data.jsonl", files / "again", "--checkpoint", files / "run", "--lora-rank", "2") == 0
    assert instruct_model_from_checkpoint(files / "again")[2]["lora"] == {"rank": 2, "alpha": 2.0}
    assert finetune(files / "data.jsonl", files / "from_char", "--checkpoint", files / "pre_char") == 2
    err = capsys.readouterr().err
    assert "no end-of-text token" in err and err.count("\n") == 1 and not (files / "from_char").exists()


def test_finetune_from_a_hugging_face_folder_loads_its_weights(files, capsys):
    "--weights: a random transformers GPT-2 saved to a folder; LoRA freezes the base, so it stays GPT-2's."
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64))
    hf.eval().save_pretrained(files / "hf", safe_serialization=True)
    capsys.readouterr()
    assert finetune(files / "data.jsonl", files / "from_hf", "--weights", files / "hf", "--lora-rank", "2") == 0
    assert "no --weights" not in capsys.readouterr().err  # GPT-2's weights: no note about random ones
    model, tok, info = instruct_model_from_checkpoint(files / "from_hf")
    assert (tok.get_n_vocab_tokens(), model.cfg["emb_dim"], info["lora"]) == (50257, 32, {"rank": 2, "alpha": 2.0})
    assert torch.equal(model.emb.tok_emb.weight, hf.transformer.wte.weight.detach())  # frozen: as saved
    q = model.trf_blocks[0].att.W_query.linear.weight  # HF keeps q, k, v in one Conv1D: its first third, transposed
    assert torch.equal(q, hf.transformer.h[0].attn.c_attn.weight[:, :32].T.detach())
