"""Instruction fine-tuning (chapter 10) where the notebook says it badly: the collate function's edge cases,
the book's own code against ours (the same batches, the same losses under the book's seeds), bad data files,
finding the data, ROUGE-L against the `rouge-score` package, and responses.

The book's functions below are written the way the book's chapter 7 writes them, so that the comparison is
with an independent implementation, not with tiny_gpt itself. No test downloads anything."""
import json
import os
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tiny_gpt.io import CorpusNotAvailableError, data_dir
from tiny_gpt.model import GPTConfig, GPTModel, init_gpt2_weights
from tiny_gpt.tokenizers import TikTokenizer
from tiny_gpt.instruct import (INSTRUCTION_DATA_NAME, INSTRUCTION_DATA_SHA256, InstructionDataset,
                               SubsetTokenizer, check_instruction_data, custom_collate_fn,
                               download_and_load_file, format_input, generate_response, generate_responses,
                               instruction_data_path, lcs_length, response_loss, rouge_l, rouge_l_score,
                               rouge_tokens)
from tiny_gpt.train import train_model_simple

EOT = 50256


@pytest.fixture(scope="module")
def data():
    "The book's 1,100 entries, from TINY_GPT_DATA (never downloaded here)."
    folder = data_dir()
    if folder is None or not (folder / INSTRUCTION_DATA_NAME).is_file():
        pytest.skip("set TINY_GPT_DATA to a folder holding instruction-data.json")
    return json.loads((folder / INSTRUCTION_DATA_NAME).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer():
    return TikTokenizer("gpt2")


# --- the book's chapter 7, as the book writes it ---------------------------------------------------------

class BookInstructionDataset(Dataset):
    def __init__(self, data, tokenizer):
        self.data = data
        self.encoded_texts = []
        for entry in data:
            instruction_plus_input = format_input(entry)
            response_text = f"\n\n### Response:\n{entry['output']}"
            full_text = instruction_plus_input + response_text
            self.encoded_texts.append(tokenizer.encode(full_text))

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def book_collate_fn(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


def book_format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


def book_calc_loss_batch(input_batch, target_batch, model, device):
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def book_calc_loss_loader(data_loader, model, device, num_batches=None):
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            total_loss += book_calc_loss_batch(input_batch, target_batch, model, device).item()
        else:
            break
    return total_loss / num_batches


def book_evaluate_model(model, train_loader, val_loader, device, eval_iter):
    model.eval()
    with torch.no_grad():
        train_loss = book_calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = book_calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def book_train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            start_context, tokenizer):
    "The book's loop; its sample after each epoch (greedy: no random numbers drawn) left out."
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = book_calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = book_evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
    return train_losses, val_losses, track_tokens_seen


# --- the collate function's edge cases -------------------------------------------------------------------

def test_the_books_example_batch():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, EOT, EOT, EOT], [7, 8, 9, EOT, EOT]]
    assert targets.tolist() == [[1, 2, 3, 4, EOT], [6, EOT, -100, -100, -100], [8, 9, EOT, -100, -100]]


def test_a_batch_of_one_has_no_padding_but_its_end_of_text():
    inputs, targets = custom_collate_fn([[3, 4, 5]])
    assert inputs.tolist() == [[3, 4, 5]] and targets.tolist() == [[4, 5, EOT]]


def test_an_empty_batch_is_refused_in_one_line():
    with pytest.raises(ValueError, match="empty batch"): custom_collate_fn([])


def test_sequences_longer_than_allowed_max_length_are_cut_after_masking():
    inputs, targets = custom_collate_fn([list(range(10)), [1, 2]], allowed_max_length=4)
    assert inputs.shape == targets.shape == (2, 4)
    assert inputs.tolist() == [[0, 1, 2, 3], [1, 2, EOT, EOT]]
    assert targets.tolist() == [[1, 2, 3, 4], [2, EOT, -100, -100]]
    assert custom_collate_fn([[1, 2]], allowed_max_length=100)[0].shape == (1, 2)  # never padded past the batch


def test_an_end_of_text_inside_a_text_stays_a_target(tokenizer):
    "The book's masks by value and would hide the real end; ours masks by position."
    inputs, targets = custom_collate_fn([[7, EOT, 9], [1, 2, 3, 4, 5]])
    assert targets[0].tolist() == [EOT, 9, EOT, -100, -100]
    _, book_targets = book_collate_fn([[7, EOT, 9], [1, 2, 3, 4, 5]])
    assert book_targets[0].tolist() == [EOT, 9, -100, -100, -100]  # the difference the chapter describes
    # several end-of-text tokens in a row, and a text that ends with one
    assert custom_collate_fn([[EOT, EOT], [1, 2, 3]])[1][0].tolist() == [EOT, EOT, -100]


def test_a_custom_pad_and_ignore_index():
    inputs, targets = custom_collate_fn([[1], [1, 2, 3]], pad_token_id=0, ignore_index=-1)
    assert inputs.tolist() == [[1, 0, 0], [1, 2, 3]] and targets.tolist() == [[0, -1, -1], [2, 3, 0]]


def test_an_empty_input_field_writes_no_input_section(tokenizer):
    entry = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
    assert format_input(entry) == book_format_input(entry)
    assert "### Input" not in format_input(entry)
    ds = InstructionDataset([entry], tokenizer)
    assert tokenizer.decode(ds[0]) == format_input(entry) + "\n\n### Response:\nBlue."
    with_input = {**entry, "input": "sky"}
    assert format_input(with_input).endswith("\n\n### Input:\nsky") and format_input(with_input) == \
        book_format_input(with_input)


def test_a_one_token_answer_is_learned_then_the_end(tokenizer):
    entry = {"instruction": "Say yes.", "input": "", "output": "Yes"}
    n_prompt, ids = InstructionDataset([entry], tokenizer, mask_instruction=True)[0]
    longer = {"instruction": "Say yes, at length, please.", "input": "", "output": "Yes indeed, certainly."}
    _, targets = custom_collate_fn([(n_prompt, ids), InstructionDataset([longer], tokenizer, True)[0]])
    kept = targets[0][targets[0] != -100].tolist()
    assert tokenizer.decode(kept) == "\n\n### Response:\nYes<|endoftext|>"
    assert kept[-2] == tokenizer.encode("Yes")[0]  # the one token of the answer, then the end


def test_masked_and_unmasked_items_agree_outside_the_prompt(data, tokenizer):
    plain = InstructionDataset(data[:16], tokenizer)
    masked = InstructionDataset(data[:16], tokenizer, mask_instruction=True)
    x1, y1 = custom_collate_fn([plain[i] for i in range(16)])
    x2, y2 = custom_collate_fn([masked[i] for i in range(16)])
    assert torch.equal(x1, x2)
    differs = y1 != y2
    assert (y2[differs] == -100).all()  # masking only hides targets
    for row, (n_prompt, _) in enumerate(masked[i] for i in range(16)):
        assert differs[row].sum() == n_prompt - 1  # exactly the predictions of prompt tokens 1..n-1


# --- the book's code on tiny_gpt --------------------------------------------------------------------------

def test_our_batches_are_the_books_on_the_whole_data_set(data, tokenizer):
    "No entry holds an end-of-text of its own, so masking by position is masking by value here."
    ours = InstructionDataset(data, tokenizer)
    book = BookInstructionDataset(data, tokenizer.encoding)  # tiktoken.get_encoding("gpt2")
    assert ours.encoded_texts == book.encoded_texts
    for start in range(0, len(data), 8):
        batch = [ours[i] for i in range(start, min(start + 8, len(data)))]
        for a, b in zip(custom_collate_fn(batch, allowed_max_length=64), book_collate_fn(batch, allowed_max_length=64)):
            assert torch.equal(a, b)


def test_the_books_train_model_simple_call_gives_the_books_losses(data, tokenizer, capsys):
    "The book's seeds, loaders and call, with dropout on: tiny_gpt's code and the book's give the same losses."
    cfg = {"vocab_size": 50257, "context_length": 128, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.1, "qkv_bias": False}
    train_data, val_data = data[:24], data[1045:1053]  # 3 steps an epoch

    def run(dataset_cls, collate, loop):
        collate = partial(collate, device="cpu", allowed_max_length=1024)
        torch.manual_seed(123)
        train_loader = DataLoader(dataset_cls(train_data, tokenizer), batch_size=8, collate_fn=collate,
                                  shuffle=True, drop_last=True, num_workers=0)
        val_loader = DataLoader(dataset_cls(val_data, tokenizer), batch_size=8, collate_fn=collate,
                                shuffle=False, drop_last=False, num_workers=0)
        torch.manual_seed(123)
        model = GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.005, weight_decay=0.1)
        return loop(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=2, eval_iter=2,
                    start_context=format_input(val_data[0]), tokenizer=tokenizer)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small: one thread is fastest, and the sums are the same for both runs
    try:
        ours = run(InstructionDataset, custom_collate_fn, train_model_simple)
        book = run(BookInstructionDataset, book_collate_fn, book_train_model_simple)
    finally: torch.set_num_threads(threads)
    assert len(ours[0]) == 3 and ours[2] == book[2]  # evaluations at steps 0, 2, 4; the same tokens seen
    assert ours[0] == pytest.approx(book[0], rel=1e-5) and ours[1] == pytest.approx(book[1], rel=1e-5)
    assert ours[0][-1] < ours[0][0]  # it trained
    assert capsys.readouterr().out.count("### Instruction:") == 2  # our loop's sample after each epoch


# --- data files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("", "is empty; expected a JSON list of entries"),
    ("   \n", "is empty"),
    ("not json", "is not JSON (Expecting value, line 1 column 1)"),
    ('{"instruction": "x"}', "holds a JSON dict; expected a JSON list of"),
    ("[]", "holds an empty list; expected"),
    ('["just text"]', "entry 0 is a str; expected"),
    ('[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c"}]', "entry 1 lacks input, output"),
    ('[{"instruction": "a", "input": null, "output": "b"}]', "entry 0 has input of type NoneType"),
    ('[{"instruction": "a", "input": "", "output": 3}]', "entry 0 has output of type int"),
])
def test_a_file_that_is_not_the_layout_fails_in_one_line(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info: download_and_load_file(path, "file:///nowhere")
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_check_instruction_data_returns_good_data_unchanged():
    good = [{"instruction": "a", "input": "", "output": "b", "extra": 1}]
    assert check_instruction_data(good) is good


def test_the_data_is_found_in_tiny_gpt_data_and_checked(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_GPT_CACHE", str(tmp_path / "cache"))
    assert instruction_data_path().name == INSTRUCTION_DATA_NAME
    monkeypatch.setenv("TINY_GPT_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / INSTRUCTION_DATA_NAME).write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="SHA-256"): instruction_data_path()  # another file by that name


def test_without_the_data_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TINY_GPT_DATA", raising=False)
    monkeypatch.setenv("TINY_GPT_CACHE", str(tmp_path))
    monkeypatch.setenv("TINY_GPT_OFFLINE", "1")
    with pytest.raises(CorpusNotAvailableError) as info: instruction_data_path()
    message = str(info.value)
    assert "TINY_GPT_OFFLINE" in message and "TINY_GPT_DATA" in message and "\n" not in message
    with pytest.raises(CorpusNotAvailableError, match="could not download"):
        instruction_data_path(download=True, url=(tmp_path / "missing.json").as_uri())


def test_a_download_lands_in_the_cache_verified(data, tmp_path, monkeypatch):
    "A local file:// address stands in for the book's repository: nothing leaves this computer."
    source = data_dir() / INSTRUCTION_DATA_NAME
    monkeypatch.delenv("TINY_GPT_DATA", raising=False)
    monkeypatch.setenv("TINY_GPT_CACHE", str(tmp_path / "cache"))
    path = instruction_data_path(download=True, url=source.as_uri())
    assert path == tmp_path / "cache" / INSTRUCTION_DATA_NAME and path.read_bytes() == source.read_bytes()
    assert instruction_data_path(download=False) == path  # found in the cache next time
    copy = tmp_path / "copy.json"
    assert download_and_load_file(copy, source.as_uri()) == data and copy.is_file()  # the book's loader


# --- ROUGE-L ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, reference, expected", [
    ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
    ("Paris", "The capital of France is Paris.", 2 * (1 / 6) / (1 + 1 / 6)),
    ("", "Paris", 0.0),
    ("Paris", "", 0.0),
    ("", "", 0.0),
    ("London", "Paris", 0.0),
    ("PARIS!!", "paris", 1.0),
    ("a b c d", "d c b a", 2 * 0.25 * 0.25 / 0.5),   # one word in order: LCS 1
    ("a b a b", "b a b a", 0.75),                   # LCS 3 ("a b a" / "b a b")
    ("it's 42", "it s 42", 1.0),                    # punctuation separates words
    ("café au lait", "caf au lait", 1.0),           # only a-z and 0-9 are word characters
])
def test_rouge_l_by_hand(prediction, reference, expected):
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_lcs_length_on_known_cases():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example (CLRS)
    assert lcs_length([], [1]) == lcs_length([1], []) == 0
    assert lcs_length("aaaa", "aa") == 2
    assert rouge_tokens("Hello, World-2!") == ["hello", "world", "2"]


def test_rouge_l_score_is_the_mean():
    entries = [{"output": "a b", "model_response": "a b"}, {"output": "a b", "model_response": "c"}]
    assert rouge_l_score(entries) == 0.5
    with pytest.raises(ValueError, match="no entries"): rouge_l_score([])


def test_rouge_l_is_the_rouge_score_packages(data):
    "Against Google's rouge-score (pip install rouge-score): the same F-measure on real pairs."
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [(a["output"], b["output"]) for a, b in zip(data[:300], data[1:301])]
    pairs += [(e["instruction"], e["output"]) for e in data[:300]] + [("", "x"), ("x", ""), ("Ünïcödé 12", "unicode 12")]
    for prediction, reference in pairs:
        expected = scorer.score(reference, prediction)["rougeL"].fmeasure  # score(target, prediction)
        assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12), (prediction, reference)


# --- the small vocabulary and responses -------------------------------------------------------------------

def test_subset_tokenizer_round_trips_and_names_what_it_lacks(tokenizer):
    texts = ["Hello world", "Goodbye world<|endoftext|>"]
    small = SubsetTokenizer(texts, tokenizer)
    used = set(tokenizer.encode("Hello world")) | set(tokenizer.encode("Goodbye world")) | {EOT}
    assert small.get_n_vocab_tokens() == len(used) and small.base_ids == sorted(used)
    assert small.decode(small.encode("Hello world")) == "Hello world"
    assert small.eot_token == small.get_n_vocab_tokens() - 1  # 50256 is the largest GPT-2 id
    assert max(small.encode("Goodbye world")) < small.get_n_vocab_tokens()
    with pytest.raises(ValueError, match=f"'Z' is not among the {len(used)} tokens of this SubsetTokenizer"):
        small.encode("Zebra")
    assert repr(small).startswith(f"SubsetTokenizer({small.get_n_vocab_tokens()} of gpt2's 50,257 tokens")


class OneAnswer(torch.nn.Module):
    "A stand-in GPT that writes a fixed answer token by token, then end-of-text, whatever the prompt."
    def __init__(self, answer_ids):
        super().__init__()
        self.answer, self.prompt_len = answer_ids, None
        self.cfg = GPTConfig.of({"vocab_size": 50257, "context_length": 256, "emb_dim": 8, "n_heads": 1,
                                 "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False})
        self.trf_blocks = [None]  # one KV cache, left empty: `generate` then feeds the whole text each step
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, cache=None, pad=None):
        if self.prompt_len is None: self.prompt_len = ids.shape[1]
        written = ids.shape[1] - self.prompt_len
        logits = torch.zeros(ids.shape[0], ids.shape[1], 50257)
        logits[:, -1, self.answer[written] if written < len(self.answer) else EOT] = 1.0
        return logits


def test_generate_response_stops_at_end_of_text_and_strips_the_heading(tokenizer):
    answer = tokenizer.encode("\n\n### Response:\n Blue. ")
    model = OneAnswer(answer)
    text = generate_response(model, {"instruction": "Name a colour.", "input": ""}, tokenizer, "cpu",
                             max_new_tokens=50)
    assert text == "Blue."
    model.prompt_len = None
    out = generate_responses(model, [{"instruction": "Name a colour.", "input": "", "output": "Red."}], tokenizer,
                             "cpu", max_new_tokens=50, json_key="answer")
    assert out == [{"instruction": "Name a colour.", "input": "", "output": "Red.", "answer": "Blue."}]


def test_response_loss_counts_only_the_answer(data, tokenizer):
    small = SubsetTokenizer([format_input(e) + f"\n\n### Response:\n{e['output']}" for e in data[:40]], tokenizer)
    cfg = {"vocab_size": small.get_n_vocab_tokens(), "context_length": 128, "emb_dim": 16, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(cfg))
    loss = response_loss(model, data[:16], small, "cpu", batch_size=16)
    ds = InstructionDataset(data[:16], small, mask_instruction=True)
    x, y = custom_collate_fn([ds[i] for i in range(16)], pad_token_id=small.eot_token)
    with torch.no_grad(): expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert model.training  # restored


def test_batched_responses_are_the_responses_one_at_a_time(data, tokenizer):
    "Chapter 10's batches (left-padded, cached, eos per row) give each entry the tokens it gets alone."
    from tiny_gpt.instruct import generate_responses_batched, response_ids_batched
    from tiny_gpt.model import generate
    small = SubsetTokenizer([format_input(e) + f"\n\n### Response:\n{e['output']}" for e in data[:40]], tokenizer)
    cfg = {"vocab_size": small.get_n_vocab_tokens(), "context_length": 128, "emb_dim": 16, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(cfg)).eval()
    entries = data[:12]
    prompts = [small.encode(format_input(e)) for e in entries]
    free = [generate(model, torch.tensor([p]), 20, 128)[0, len(p):].tolist() for p in prompts]
    eos = free[0][4]  # a token the model writes, as end-of-text: rows stop at different steps, or never
    batched = response_ids_batched(model, prompts, eos, max_new_tokens=20, batch_size=5)  # 5, 5, then 2
    stops = 0
    for prompt, ids in zip(prompts, batched):
        alone = generate(model, torch.tensor([prompt]), 20, 128, eos_id=eos)[0, len(prompt):].tolist()
        stops += eos in alone
        alone = alone[:alone.index(eos)] if eos in alone else alone
        k = next((i for i, (a, b) in enumerate(zip(alone, ids)) if a != b), None)
        if k is None: assert len(alone) == len(ids)
        else:  # a float32 rounding flip: the two best logits of the alone run were within 1e-4
            with torch.no_grad(): best = model(torch.tensor([prompt + alone[:k]]))[0, -1].topk(2).values
            assert best[0] - best[1] < 1e-4
    assert 0 < stops < len(entries)  # some rows stopped early, some did not
    one_at_a_time = generate_responses(model, entries, small, "cpu", max_new_tokens=20)
    assert generate_responses_batched(model, entries, small, "cpu", max_new_tokens=20, batch_size=5) == one_at_a_time


# --- the library's train on instructions: checkpoints and an exact resume ---------------------------------

SAY = [{"instruction": f"Say {w}.", "input": "" if i % 2 else w, "output": f"{w.title()}."}
       for i, w in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight"] * 3)]


def _library_run(out_dir, tok, stop_after=None, resume=False, lora=None, mask=False):
    "A tiny model fine-tuned by `train` on SAY for 6 steps in `out_dir`: (model, history)."
    from tiny_gpt.instruct import instruction_loader, instruction_task
    from tiny_gpt.lora import replace_linear_with_lora
    from tiny_gpt.train import train
    torch.manual_seed(1)
    cfg = {"vocab_size": tok.get_n_vocab_tokens(), "context_length": 64, "emb_dim": 16, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.1, "qkv_bias": False}  # dropout on: the RNG states must resume too
    model = init_gpt2_weights(GPTModel(cfg))
    if lora:
        for p in model.parameters(): p.requires_grad = False
        replace_linear_with_lora(model, *lora)
    loader = instruction_loader(InstructionDataset(SAY[:20], tok, mask), 4, pad_token_id=tok.eot_token,
                                allowed_max_length=64, seed=7)
    val = instruction_loader(InstructionDataset(SAY[20:], tok), 4, shuffle=False, drop_last=False,
                             pad_token_id=tok.eot_token, allowed_max_length=64)
    history = train(model, loader, val, device="cpu", out_dir=out_dir, resume=resume, tokenizer=tok,
                    task=instruction_task(tok, mask, lora), max_steps=7, lr=1e-2, warmup_steps=2,
                    eval_interval=3, eval_iters=2, progress=False, stop_after=stop_after)
    return model, history


@pytest.mark.parametrize("lora, mask", [(None, False), ((2, 4.0), True)])
def test_a_stopped_instruction_run_resumes_bit_for_bit(tmp_path, tokenizer, lora, mask):
    "Past an epoch's end (5 batches an epoch, 7 steps), with dropout, LoRA and masking: the same weights."
    from tiny_gpt.instruct import instruct_model_from_checkpoint
    tok = SubsetTokenizer([format_input(e) + f"\n\n### Response:\n{e['output']}" for e in SAY], tokenizer)
    whole, whole_history = _library_run(tmp_path / "whole", tok, lora=lora, mask=mask)
    _, stopped = _library_run(tmp_path / "stopped", tok, stop_after=4, lora=lora, mask=mask)
    assert stopped["stopped_at"]["step"] == 4
    resumed, resumed_history = _library_run(tmp_path / "stopped", tok, resume=True, lora=lora, mask=mask)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert resumed_history["eval"]["val_loss"] == whole_history["eval"]["val_loss"]
    loaded, loaded_tok, info = instruct_model_from_checkpoint(tmp_path / "stopped")
    assert loaded_tok.base_ids == tok.base_ids and loaded_tok.eot_token == tok.eot_token
    assert info["lora"] == (None if lora is None else {"rank": 2, "alpha": 4.0}) and info["mask_instruction"] == mask
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), whole.state_dict().values()))


def test_instruct_model_from_checkpoint_refuses_other_models(tmp_path):
    from tiny_gpt.instruct import instruct_model_from_checkpoint
    from tiny_gpt.checks import BadInput
    from tiny_gpt.train import train
    from tiny_gpt.data import tiny_data_loader
    cfg = {"vocab_size": 50257, "context_length": 8, "emb_dim": 8, "n_heads": 1, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    loader = tiny_data_loader(torch.arange(200), batch_size=2, max_length=8, stride=8, seed=0)
    train(init_gpt2_weights(GPTModel(cfg)), loader, device="cpu", out_dir=tmp_path, max_steps=1, progress=False)
    with pytest.raises(BadInput, match="holds a next_token model, not one fine-tuned on instructions"):
        instruct_model_from_checkpoint(tmp_path)
