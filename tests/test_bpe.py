"""BPETokenizer against tiktoken on arbitrary text, and the trainer against the naive definition."""
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tiny_gpt.bpe import BPETokenizer, count_pairs, merge_word, pretokenize, _learn_merges, count_pretokens, _text_chunks
from tiny_gpt.tokenizers import TikTokenizer

DATA = Path(os.environ.get("TINY_GPT_DATA", Path(__file__).parents[2] / "shared" / "data"))
OURS, THEIRS = BPETokenizer.gpt2(), TikTokenizer("gpt2").encoding
OURS_ALL, THEIRS_ALL = BPETokenizer.gpt2("all"), TikTokenizer("gpt2", "all")

# Text that stresses a byte-level tokenizer: every Unicode category but lone surrogates, plus the
# pieces GPT-2's pattern treats specially.
tricky = st.sampled_from(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", " ", "  ", "\t", "\n", "\r\n", "\n\n\n",
                          "\u00a0", "\u3000", "123", " 4567", "<|endoftext|>", "<|endoftext", "🦜", "👩‍👩‍👧", "é", "e\u0301"])
texts = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), tricky), max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_gpt2_encode_ordinary_equals_tiktoken(text):
    assert OURS.encode_ordinary(text) == THEIRS.encode_ordinary(text)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_gpt2_special_tokens_follow_tiktoken(text):
    assert OURS_ALL.encode(text) == THEIRS_ALL.encode(text)
    if "<|endoftext|>" in text:
        with pytest.raises(ValueError, match="allowed_special"): OURS.encode(text)
    else:
        assert OURS.encode(text) == THEIRS.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=40))
def test_gpt2_decode_equals_tiktoken(ids):
    assert OURS.decode(ids) == THEIRS.decode(ids)  # invalid UTF-8 becomes U+FFFD in both


@pytest.mark.parametrize("name, n_tokens", [("the-verdict.txt", 5145), ("tinyshakespeare.txt", 338_025)])
def test_gpt2_on_the_corpora(name, n_tokens):
    text = (DATA / name).read_text(encoding="utf-8")
    ids = OURS.encode_ordinary(text)
    assert len(ids) == n_tokens and ids == THEIRS.encode_ordinary(text)


def naive_merges(words: Counter, n: int) -> list:
    "The definition: recount every pair, take the most frequent (then the smallest pair), merge."
    merges = []
    for new_id in range(256, 256 + n):
        pairs = count_pairs(words)
        if not pairs: break
        best = max(pairs.items(), key=lambda kv: (kv[1], (-kv[0][0], -kv[0][1])))[0]
        merges.append(best)
        words = Counter({merge_word(w, best, new_id): f for w, f in words.items()})
    return merges


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab c\n", max_size=200), st.integers(1, 30))
def test_incremental_trainer_equals_naive(text, n):
    counts = count_pretokens(text)
    words = Counter({tuple(p.encode()): f for p, f in counts.items()})
    assert _learn_merges([list(p.encode()) for p in counts], list(counts.values()), n, False) == naive_merges(words, n)


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=300), st.integers(1, 50))
def test_chunked_counting_equals_whole(text, chunk):
    assert "".join(_text_chunks(text, chunk)) == text
    assert sum((Counter(pretokenize(c)) for c in _text_chunks(text, chunk)), Counter()) == Counter(pretokenize(text))


@pytest.fixture(scope="module")
def shakespeare_tokenizer():
    return BPETokenizer.train(DATA / "tinyshakespeare.txt", vocab_size=400, workers=2, progress=False)


def test_training_from_a_file_with_two_workers_equals_training_from_text(shakespeare_tokenizer):
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert BPETokenizer.train(text, vocab_size=400, progress=False).ranks == shakespeare_tokenizer.ranks


@settings(max_examples=100, deadline=None)
@given(texts)
def test_trained_tokenizer_round_trips(shakespeare_tokenizer, text):
    text = text.replace("<|endoftext|>", "")
    assert shakespeare_tokenizer.decode(shakespeare_tokenizer.encode(text)) == text


def test_save_load_round_trip(shakespeare_tokenizer, tmp_path):
    path = shakespeare_tokenizer.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert (loaded.ranks, loaded.special_tokens, loaded.pattern) == \
           (shakespeare_tokenizer.ranks, shakespeare_tokenizer.special_tokens, shakespeare_tokenizer.pattern)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write cleaned up


@pytest.mark.parametrize("content, message", [
    ("", "is not a saved BPETokenizer"), ("[]", "is not a saved BPETokenizer"), ('{"format": "tiny_gpt.bpe"}', "format version None"),
    ('{"format": "tiny_gpt.bpe", "version": 1}', "malformed field"),
    ('{"format": "tiny_gpt.bpe", "version": 1, "name": "x", "pattern": "x", "special_tokens": {}, "tokens": ["a"]}', "256 single bytes"),
])
def test_load_refuses_damaged_files(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(tmp_path / "bad.json")
