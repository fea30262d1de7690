"""Classification (tiny_gpt.classify): the data pipeline's numbers, the book's functions on tiny_gpt, bad inputs."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import torch
import torch.nn.functional as F

from tiny_gpt.classify import (CLASSIFY_CONFIG, SMS_SPAM_NAME, SMS_SPAM_SHA256, SpamDataset, calc_accuracy_loader,
                               calc_loss_batch, calc_loss_loader, classify_review, create_balanced_dataset,
                               download_and_unzip_spam_data, download_sms_spam, evaluate_model, find_sms_spam,
                               last_token_logits, lf_sha256, random_split, to_classifier)
from tiny_gpt.io import CorpusNotAvailableError
from tiny_gpt.model import GPTModel, init_gpt2_weights
from tiny_gpt.tokenizers import TikTokenizer, gpt2_encoding

pd = pytest.importorskip("pandas")
DATA = Path(os.environ.get("TINY_GPT_DATA", "/nonexistent")) / SMS_SPAM_NAME
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"{SMS_SPAM_NAME} not in TINY_GPT_DATA (CI has it)")


@pytest.fixture(scope="module")
def split():
    df = pd.read_csv(DATA, sep="\t", header=None, names=["Label", "Text"])
    balanced = create_balanced_dataset(df)
    balanced["Label"] = balanced["Label"].map({"ham": 0, "spam": 1})
    return df, balanced, random_split(balanced, 0.7, 0.1)


@needs_data
def test_the_books_numbers(split):
    df, balanced, (train, val, test) = split
    assert (len(df), df["Label"].value_counts().to_dict()) == (5572, {"ham": 4825, "spam": 747})
    assert balanced["Label"].value_counts().to_dict() == {0: 747, 1: 747}
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    tok = TikTokenizer("gpt2")
    train_ds = SpamDataset(train, tok)
    val_ds, test_ds = (SpamDataset(d, tok, max_length=train_ds.max_length) for d in (val, test))
    assert (train_ds.max_length, val_ds.max_length, test_ds.max_length) == (120, 120, 120)
    torch.manual_seed(123)
    loaders = [torch.utils.data.DataLoader(train_ds, batch_size=8, shuffle=True, drop_last=True),
               torch.utils.data.DataLoader(val_ds, batch_size=8), torch.utils.data.DataLoader(test_ds, batch_size=8)]
    assert [len(l) for l in loaders] == [130, 19, 38]


@needs_data
def test_a_plain_tab_split_finds_two_more_lines():
    lines = DATA.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5574 and sum(l.startswith("ham\t") for l in lines) == 4827
    assert lines[5081].startswith('ham\t"Keep ur problems') and lines[5083].startswith('ham\t"HI BABE')


@needs_data
def test_the_books_tiktoken_encoding_and_ours_give_the_same_rows(split, tmp_path):
    _, _, (train, _, _) = split
    train.to_csv(tmp_path / "train.csv", index=None)  # the book's CSV path
    book = SpamDataset(tmp_path / "train.csv", tokenizer=gpt2_encoding())  # the tiktoken Encoding the book uses
    ours = SpamDataset(train, tokenizer=TikTokenizer("gpt2"))
    assert book.encoded_texts == ours.encoded_texts and book.max_length == 120
    x, y = book[2]
    assert x.dtype == y.dtype == torch.long and x.shape == (120,)


def book_calc_loss_batch(input_batch, target_batch, model, device):  # the book's chapter 6, as printed
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, -1, :]
    return F.cross_entropy(logits, target_batch)


def book_calc_accuracy_loader(data_loader, model, device, num_batches=None):
    model.eval()
    correct_predictions, num_examples = 0, 0
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            with torch.no_grad(): logits = model(input_batch)[:, -1, :]
            predicted_labels = torch.argmax(logits, dim=-1)
            num_examples += predicted_labels.shape[0]
            correct_predictions += (predicted_labels == target_batch).sum().item()
        else: break
    return correct_predictions / num_examples


def small_classifier(seed=123):
    torch.manual_seed(seed)
    return to_classifier(init_gpt2_weights(GPTModel(CLASSIFY_CONFIG)), trainable="all").eval()


def batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50256, (8, 20), generator=g)
    x[:, 15:] = 50256  # padding at the end
    return [(x[i:i + 2], torch.randint(0, 2, (2,), generator=g)) for i in range(0, n * 2, 2)]


def test_the_books_losses_and_accuracy_on_the_same_model():
    model, loader = small_classifier(), batches()
    for x, y in loader:
        assert torch.equal(calc_loss_batch(x, y, model, "cpu"), book_calc_loss_batch(x, y, model, "cpu"))
    book_loss = sum(book_calc_loss_batch(x, y, model, "cpu").item() for x, y in loader[:3]) / 3
    assert calc_loss_loader(loader, model, "cpu", num_batches=3) == book_loss
    assert calc_accuracy_loader(loader, model, "cpu") == book_calc_accuracy_loader(loader, model, "cpu")
    model.train()
    assert evaluate_model(model, loader, loader, "cpu", eval_iter=2)[0] == calc_loss_loader(loader, model, "cpu", 2)
    assert model.training  # evaluate_model puts the model back in training mode, as the book's does
    assert calc_loss_loader([], model, "cpu") != calc_loss_loader([], model, "cpu")  # nan for an empty loader


def test_last_real_token_ignores_padding():
    model, (x, y) = small_classifier(), batches()[0]
    longer = torch.cat([x, torch.full((2, 7), 50256)], dim=1)  # more padding: the same answer
    with torch.no_grad():
        a = last_token_logits(model(x), x, "last_real")
        b = last_token_logits(model(longer), longer, "last_real")
        assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(a, model(x[:, :15])[:, -1], atol=1e-5)  # as if there were no padding


def test_classify_review_pads_nothing_without_max_length_and_cuts_to_the_context():
    model, tok = small_classifier(), TikTokenizer("gpt2")
    text = "Win a prize now " * 100  # 400 tokens, longer than the context (128)
    answer = classify_review(text, model, tok, "cpu", max_length=None)
    cut = torch.tensor([tok.encode(text)[:128]])
    with torch.no_grad(): expected = "spam" if model(cut)[0, -1].argmax().item() == 1 else "not spam"
    assert answer == expected
    assert classify_review("hi", model, tok, "cpu", max_length=500) in ("spam", "not spam")  # cut to 128


def make_zip(path: Path, text: bytes, name=SMS_SPAM_NAME) -> str:
    with zipfile.ZipFile(path, "w") as z: z.writestr(name, text)
    return path.as_uri()


@needs_data
def test_a_crlf_download_is_accepted_and_stored_with_lf(tmp_path):
    text = DATA.read_bytes()
    url = make_zip(tmp_path / "crlf.zip", text.replace(b"\n", b"\r\n"))
    dest = download_sms_spam(tmp_path / "out" / SMS_SPAM_NAME, urls=[url])
    assert dest.read_bytes() == text and lf_sha256(text) == SMS_SPAM_SHA256


@needs_data
def test_the_mirror_is_tried_when_the_first_address_fails(tmp_path):
    url = make_zip(tmp_path / "ok.zip", DATA.read_bytes())
    dest = download_sms_spam(tmp_path / SMS_SPAM_NAME, urls=[(tmp_path / "missing.zip").as_uri(), url])
    assert lf_sha256(dest.read_bytes()) == SMS_SPAM_SHA256


def test_another_text_is_refused_and_leaves_no_file(tmp_path):
    url = make_zip(tmp_path / "bad.zip", b"ham\tnot the collection\n")
    with pytest.raises(ConnectionError, match="not edc1f2") as e:
        download_sms_spam(tmp_path / SMS_SPAM_NAME, urls=[url])
    assert "\n" not in str(e.value) and not (tmp_path / SMS_SPAM_NAME).exists()
    url = make_zip(tmp_path / "other.zip", b"x", name="readme.txt")
    with pytest.raises(ConnectionError, match="holds no SMSSpamCollection"):
        download_sms_spam(tmp_path / SMS_SPAM_NAME, urls=[url])


def test_neither_found_nor_downloadable_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_GPT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TINY_GPT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CorpusNotAvailableError, match="set TINY_GPT_DATA to a folder that holds") as e:
        find_sms_spam(download=False)
    assert "\n" not in str(e.value)
    monkeypatch.setattr("tiny_gpt.classify.SMS_SPAM_URLS", ((tmp_path / "none.zip").as_uri(),))
    with pytest.raises(CorpusNotAvailableError, match="not available"):
        download_and_unzip_spam_data((tmp_path / "none.zip").as_uri(), tmp_path / "z.zip", tmp_path / "x",
                                     tmp_path / "x" / "SMSSpamCollection.tsv")


def test_a_wrong_local_copy_is_refused(tmp_path, monkeypatch):
    (tmp_path / SMS_SPAM_NAME).write_text("ham\tsomething else\n")
    monkeypatch.setenv("TINY_GPT_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="it is another text"):
        find_sms_spam(download=False)


@needs_data
def test_the_books_download_call_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip", "sms_spam_collection.zip",
            "sms_spam_collection", Path("sms_spam_collection") / "SMSSpamCollection.tsv")
    download_and_unzip_spam_data(*args)
    download_and_unzip_spam_data(*args)
    assert "already exists" in capsys.readouterr().out
    assert lf_sha256(args[3].read_bytes()) == SMS_SPAM_SHA256


def test_bad_inputs_are_one_line():
    df = pd.DataFrame({"Label": [0, 1], "Text": ["hi", "win"]})
    cases = [(lambda: SpamDataset(df, TikTokenizer("gpt2"), max_length=0), "max_length must be an integer"),
             (lambda: SpamDataset(df.rename(columns={"Text": "Msg"}), TikTokenizer("gpt2")), "columns Label and Text"),
             (lambda: random_split(df, 0.9, 0.2), "sum <= 1"),
             (lambda: create_balanced_dataset("a.csv"), "expected a DataFrame"),
             (lambda: last_token_logits(torch.zeros(1, 2, 2), torch.zeros(1, 2), "middle"), "'last' or 'last_real'"),
             (lambda: to_classifier(GPTModel(CLASSIFY_CONFIG), trainable="none"), "'last_block' or 'all'"),
             (lambda: classify_review("", small_classifier(), TikTokenizer("gpt2"), "cpu"), "no tokens")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as e: call()
        assert "\n" not in str(e.value)


def test_without_pandas_one_line_names_the_extra():
    code = ("import sys; sys.modules['pandas'] = None\n"
            "import tiny_gpt.classify as c\n"
            "try: c.create_balanced_dataset(None)\n"
            "except ImportError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == 'this function takes and returns pandas DataFrames: pip install "tiny_gpt[pandas]"'


def test_importing_the_stage_does_not_import_pandas():
    code = "import sys, tiny_gpt.classify, tiny_gpt.lora; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
