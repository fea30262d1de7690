"""`tiny-gpt finetune-classifier` and `tiny-gpt classify` (chapter 9b): bad input in one line with nothing
written, TSV and CSV files, LoRA, --weights from a Hugging Face folder, --checkpoint from `tiny-gpt train`,
an exact resume of a stopped run, and classify at the end of a pipe. Tiny models, a few steps, the CPU."""
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_gpt import classify_cli
from tiny_gpt.classify import classifier_from_checkpoint
from tiny_gpt.commands import main
from tiny_gpt.tokenizers import TikTokenizer
from tiny_gpt.train import load_checkpoint

EXE = shutil.which("tiny-gpt", path=str(Path(sys.executable).parent)) or shutil.which("tiny-gpt")
EXAMPLES = [("spam", "WIN a FREE prize now, call 0800 123"), ("ham", "see you at lunch"),
            ("spam", "URGENT: claim your cash, text WIN"), ("ham", "running late, sorry"),
            ("spam", "free entry, txt WIN to 80082"), ("ham", "can you buy milk, please"),
            ("spam", "you have WON a holiday, call now"), ("ham", "thanks for dinner"),
            ("spam", "cash prize waiting: call, now!"), ("ham", "ok, at home soon"),
            ("spam", "FREE ringtone, reply YES"), ("ham", "how was the match?")]
FAST = ["--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "--val-fraction", "0.25"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Models this small run fastest on one thread: torch's threads spin-wait for each other on a busy CPU."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tsv(folder: Path, examples=EXAMPLES, name="data.tsv") -> Path:
    path = folder / name
    path.write_text("".join(f"{label}\t{text}\n" for label, text in examples), encoding="utf-8")
    return path


def csv_file(folder: Path, examples=EXAMPLES) -> Path:
    "The same examples as a CSV file with other columns around them; texts with commas are quoted."
    path = folder / "data.csv"
    quoted = [text.replace('"', '""') for _, text in examples]
    rows = "".join(f'{i},"{text}",x,{label}\n' for i, (text, (label, _)) in enumerate(zip(quoted, examples)))
    path.write_text("id,message,other,category\n" + rows, encoding="utf-8")
    return path


def tiny_gpt(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status: int, out: str, err: str, *fragments: str) -> None:
    assert status == 2 and out == "", (status, out, err)
    assert err.startswith("tiny-gpt: error: ") and err.count("\n") == 1, err
    for fragment in fragments: assert fragment in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    "A finished run on EXAMPLES (random CLASSIFY_CONFIG start, last_real position)."
    folder = tmp_path_factory.mktemp("trained")
    assert main(["finetune-classifier", str(tsv(folder)), "--out", str(folder / "run"), "--position",
                 "last_real", "--quiet", *FAST]) == 0
    return folder / "run"


BAD_RUNS = {  # name: (files to write {name: bytes}, arguments after DATA, what the error says)
    "missing file": ({}, [], "no file at"),
    "empty file": ({"data.tsv": b"\n\n"}, [], "'data.tsv' holds no examples"),
    "one class": ({"data.tsv": b"ham\thello\nham\tthere\n"}, [], "every example has the label 'ham'"),
    "no tab": ({"data.tsv": b"ham\thello\nspam hello\n"}, [], "line 2 of 'data.tsv' is not label<TAB>text"),
    "empty text": ({"data.tsv": b"ham\thello\nspam\t \n"}, [], "line 2 of 'data.tsv' is not label<TAB>text"),
    "not UTF-8": ({"data.tsv": b"ham\tcaf\xe9\nspam\tx\n"}, [], "'data.tsv' is not UTF-8 text"),
    "unknown column": ({"data.csv": b"text,label\nhi,ham\nyo,spam\n"}, ["--text-column", "message"],
                       "'data.csv' has no column 'message' (its columns: 'text', 'label')"),
    "short CSV row": ({"data.csv": b"text,label\nhi,ham\nyo\n"}, [],
                      "row 3 of 'data.csv' has 1 cell for 2 columns: "),
    "long CSV row": ({"data.csv": b"text,label\nhi,ham\nyo,spam,x\n"}, [],
                     "row 3 of 'data.csv' has 3 cells for 2 columns: "),
    "empty CSV label": ({"data.csv": b"text,label\nhi,ham\nyo, \n"}, [],
                        "row 3 of 'data.csv' has an empty label: give every row a label and a text"),
    "empty CSV text": ({"data.csv": b"text,label\nhi,ham\n,spam\n"}, [],
                       "row 3 of 'data.csv' has an empty text: "),
    "column of a TSV": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--label-column", "x"], "are for CSV files"),
    "weights and checkpoint": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--weights", "gpt2", "--checkpoint", "r"],
                               "--weights (GPT-2's) or --checkpoint (yours), not both"),
    "alpha without rank": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--lora-alpha", "8"], "--lora-alpha needs"),
    "trainable with LoRA": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--lora-rank", "2", "--trainable", "all"],
                            "with --lora-rank only the adapters train"),
    "val fraction 1": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--val-fraction", "1"], "must be in [0, 1)"),
    "zero epochs": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    "batch too big": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--batch-size", "8"],
                      "--batch-size 8 is more than the 2 training texts"),
    "max length past context": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--max-length", "129"],
                                "--max-length 129 is more than the model's context (128 tokens)"),
    "resume without a run": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--resume"], "no checkpoint at"),
    "weights that name nothing": ({"data.tsv": b"ham\thi\nspam\tyo\n"}, ["--weights", "nowhere"],
                                  "--weights: no file or folder at 'nowhere'"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    files, args, message = BAD_RUNS[case]
    monkeypatch.chdir(tmp_path)
    for name, data in files.items(): Path(name).write_bytes(data)
    data = next(iter(files), "data.tsv")
    one_line_error(*tiny_gpt(capsys, "finetune-classifier", data, "--out", "run", "--device", "cpu", *args),
                   message)
    assert not Path("run").exists()


def test_a_folder_with_another_run_is_refused_and_kept(tmp_path, capsys, trained):
    before = (trained / "checkpoint.pt").read_bytes()
    one_line_error(*tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path), "--out", trained, *FAST),
                   "holds another run: pass --resume")
    one_line_error(*tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path), "--out", trained, "--resume",
                             "--batch-size", "2"), "--batch-size 2 differs from the resumed run's (4)")
    other = tsv(tmp_path, EXAMPLES[:-1], "other.tsv")
    one_line_error(*tiny_gpt(capsys, "finetune-classifier", other, "--out", trained, "--resume"),
                   "'other.tsv' is not the file the run in")
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_classify_refuses_other_labels_and_empty_texts(capsys, trained):
    one_line_error(*tiny_gpt(capsys, "classify", "--checkpoint", trained, "--labels", "spam,eggs", "hi"),
                   "classifies into ['ham', 'spam'], not ['eggs', 'spam']")
    one_line_error(*tiny_gpt(capsys, "classify", "--checkpoint", trained, "hi", "  "), "text 2 is empty")
    one_line_error(*tiny_gpt(capsys, "classify", "--checkpoint", trained.parent / "nothing", "hi"),
                   "no checkpoint at")
    status, out, err = tiny_gpt(capsys, "classify", "--checkpoint", trained, "--labels", "spam,ham", "hi", "WIN")
    assert (status, err) == (0, "") and set(out.splitlines()) <= {"ham", "spam"} and len(out.splitlines()) == 2


def test_a_csv_file_trains_the_same_classifier_as_the_tsv_file(tmp_path, capsys):
    runs = {}
    for name, data, extra in (("tsv", tsv(tmp_path), []),
                              ("csv", csv_file(tmp_path), ["--text-column", "message", "--label-column",
                                                           "category"])):
        status, out, _ = tiny_gpt(capsys, "finetune-classifier", data, "--out", tmp_path / name, *extra, *FAST)
        assert status == 0 and "2 labels, 10 training texts of" in out and "validation accuracy" in out, out
        runs[name] = load_checkpoint(tmp_path / name)
    task = runs["tsv"]["task"]
    assert (task["labels"], task["position"], task["lora"], task["pad_token_id"]) == (["ham", "spam"], "last",
                                                                                       None, 50256)
    assert task["run"] == {**runs["csv"]["task"]["run"], "data_sha256": task["run"]["data_sha256"]}
    assert task["max_length"] == runs["csv"]["task"]["max_length"]
    assert all(torch.equal(v, runs["csv"]["model"][k]) for k, v in runs["tsv"]["model"].items())
    assert runs["tsv"]["history"]["eval"]["step"] == [2]  # 10 training texts in (full) batches of 4: one epoch


def test_a_lora_run_reloads_and_trains_only_its_adapters(tmp_path, capsys):
    status, _, _ = tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path), "--out", tmp_path / "lora",
                            "--lora-rank", "2", "--lora-alpha", "4", *FAST)
    assert status == 0
    ckpt = load_checkpoint(tmp_path / "lora")
    assert ckpt["task"]["lora"] == {"rank": 2, "alpha": 4.0}
    model, tokenizer, info = classifier_from_checkpoint(tmp_path / "lora", labels=["ham", "spam"])
    assert model.out_head.lora.B.abs().sum() > 0  # the adapters moved (B starts at zero)
    texts = [text for _, text in EXAMPLES]
    expected = classify_cli.classify_texts(model, tokenizer, info, texts)
    status, out, err = tiny_gpt(capsys, "classify", "--checkpoint", tmp_path / "lora", *texts)
    assert (status, err, out.splitlines()) == (0, "", expected)


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    data, args = tsv(tmp_path), ["--epochs", "2", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu",
                                 "--val-fraction", "0.25", "--quiet"]
    assert main(["finetune-classifier", str(data), "--out", str(tmp_path / "straight"), *args]) == 0
    with monkeypatch.context() as m:  # as if Ctrl-C came after 7 batches, in the middle of the second epoch
        m.setattr(classify_cli, "train", functools.partial(classify_cli.train, stop_after=7))
        assert main(["finetune-classifier", str(data), "--out", str(tmp_path / "resumed"), *args]) == 130
    assert "stopped at step 7" in capsys.readouterr().err
    assert main(["finetune-classifier", str(data), "--out", str(tmp_path / "resumed"), "--resume", "--quiet"]) == 0
    straight, resumed = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert resumed["position"]["step"] == straight["position"]["step"] == 10  # 10 texts / 2, two epochs
    assert all(torch.equal(v, resumed["model"][k]) for k, v in straight["model"].items())
    assert straight["history"]["log"]["loss"] == resumed["history"]["log"]["loss"]


def test_classify_reads_standard_input_from_a_pipe(tmp_path, trained):
    texts = ["WIN a FREE prize", "see you at lunch", "call now " * 40]  # the last one: more than max_length
    model, tokenizer, info = classifier_from_checkpoint(trained)
    expected = [classify_cli.classify_texts(model, tokenizer, info, [t])[0] for t in texts]  # one at a time
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([EXE, "classify", "--checkpoint", str(trained), "--device", "cpu"], input="\n".join(texts)
                         + "\n", capture_output=True, text=True, encoding="utf-8", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected
    assert out.stderr == (f"tiny-gpt: note: 1 of 3 texts have more than {info['max_length']} tokens; each was "
                          f"cut to its first {info['max_length']}\n")


def test_long_texts_are_cut_with_one_note_and_max_length_is_capped_at_the_context(tmp_path, capsys):
    examples = [*EXAMPLES, ("ham", "word " * 200), ("spam", "WIN " * 300)]  # two texts past the 128-token context
    status, _, err = tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path, examples), "--out", tmp_path / "run",
                              "--val-fraction", "0", "--quiet", *FAST[:-2])
    assert status == 0
    notes = [line for line in err.splitlines() if "were cut" in line or "was cut" in line]
    assert notes == ["tiny-gpt: note: 2 of 14 texts have more than 128 tokens; each was cut to its first 128"]
    assert load_checkpoint(tmp_path / "run")["task"]["max_length"] == 128


def test_weights_from_a_hugging_face_folder_are_loaded(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=32)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    capsys.readouterr()  # its progress bar
    status, _, err = tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path), "--out", tmp_path / "run",
                              "--weights", tmp_path / "hf", "--quiet", *FAST)
    assert (status, err) == (0, ""), err  # no note about random weights
    ckpt = load_checkpoint(tmp_path / "run")
    assert (ckpt["config"]["emb_dim"], ckpt["config"]["context_length"]) == (32, 32)
    # the default --trainable last_block freezes the embeddings: they are GPT-2's, as saved
    assert torch.equal(ckpt["model"]["emb.tok_emb.weight"], hf.transformer.wte.weight.detach())
    assert ckpt["model"]["out_head.weight"].shape == (2, 32)


def test_a_tiny_gpt_train_run_is_a_starting_point(tmp_path, capsys):
    text = "".join(f"{text}. " for _, text in EXAMPLES) * 4
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    assert main(["train", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "lm"), "--tokenizer", "char",
                 "--preset", "tiny", "--max-steps", "1", "--batch-size", "2", "--eval-iters", "1", "--device",
                 "cpu", "--quiet"]) == 0
    status, _, err = tiny_gpt(capsys, "finetune-classifier", tsv(tmp_path), "--out", tmp_path / "run",
                              "--checkpoint", tmp_path / "lm", "--quiet", *FAST)
    assert (status, err) == (0, ""), err
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["tokenizer"]["kind"] == "char" and ckpt["task"]["pad_token_id"] == 0
    status, out, _ = tiny_gpt(capsys, "classify", "--checkpoint", tmp_path / "run", "see you", "WIN now")
    assert status == 0 and len(out.splitlines()) == 2


class Parity(torch.nn.Module):
    "A stand-in classifier whose answer at each position is the parity of the token id there (1: odd)."
    def forward(self, ids: torch.Tensor) -> torch.Tensor: return torch.nn.functional.one_hot(ids % 2, 2).float()


@pytest.mark.parametrize("position", ["last", "last_real"])
def test_classify_texts_reads_each_text_as_training_did(position):
    "Cut to max_length, padded with the pad id, read at the checkpoint's position, batched or not."
    tokenizer, n, pad = TikTokenizer("gpt2"), 6, 50256  # the pad id is even: class 0
    texts = ["hi", "a much longer text than six tokens, cut", "see you at lunch?", "one two three four five six",
             "WIN", "ok then", "the end of the line is here now"]
    expected = []
    for text in texts:
        ids = tokenizer.encode(text)[:n]
        read = ids[-1] if position == "last_real" or len(ids) == n else pad
        expected.append(["even", "odd"][read % 2])
    assert set(expected) == {"even", "odd"}  # the texts tell the readings apart
    info = {"labels": ["even", "odd"], "max_length": n, "pad_token_id": pad, "position": position}
    for batch_size in (1, 3, 64):
        assert classify_cli.classify_texts(Parity(), tokenizer, info, texts, batch_size=batch_size) == expected
