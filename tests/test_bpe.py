"""BPETokenizer against tiktoken on arbitrary text, and the trainer against the naive definition."""
import os
from collections import Counter
from pathlib import Path

import pytest
import regex
import tiktoken
from hypothesis import given, settings, strategies as st

from tiny_gpt.bpe import (BPETokenizer, count_pairs, merge_word, pretokenize, _learn_merges, count_pretokens, _text_chunks,
                          LETTER, NUMBER, NEWER_LETTERS, NEWER_NUMBERS, GPT4_SPLIT)
from tiny_gpt.tokenizers import TikTokenizer

DATA = Path(os.environ.get("TINY_GPT_DATA", Path(__file__).parents[2] / "shared" / "data"))
CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""  # tiktoken's
OURS, THEIRS = BPETokenizer.gpt2(), TikTokenizer("gpt2").encoding
OURS_ALL, THEIRS_ALL = BPETokenizer.gpt2("all"), TikTokenizer("gpt2", "all")

# Text that stresses a byte-level tokenizer: every Unicode category but lone surrogates, plus the
# pieces GPT-2's pattern treats specially, plus the code points where regex engines disagree: letters
# and numbers newer than tiktoken's Unicode 16.0 tables, unassigned, private-use and astral ones.
EVERY_CHAR = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))
NEWER_CHARS = regex.findall(f"[{NEWER_LETTERS}{NEWER_NUMBERS}]", EVERY_CHAR)
UNASSIGNED = regex.findall(r"\p{Cn}", EVERY_CHAR)  # per Python's regex; several are assigned in newer Unicode
tricky = st.sampled_from(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'", "''", " '", " ", "  ", "\t", "\n",
                          "\r\n", "\r", "\n\n\n", " \n", "\x0b", "\x0c", "\x85", "\u2028", "\u00a0", "\u3000", "123",
                          " 4567", "٣", "²", "Ⅻ", "<|endoftext|>", "<|endoftext", "🦜", "👩‍👩‍👧", "👍🏽", "❤️", "🇫🇷", "é", "e\u0301",
                          "\U0003d000", "\U000323b0", "\U00011de0", "\ufffe", "\U0010ffff"])
unusual_char = st.one_of(
    st.sampled_from(NEWER_CHARS), st.sampled_from(UNASSIGNED),
    st.characters(min_codepoint=0xE000, max_codepoint=0xF8FF), st.characters(min_codepoint=0xF0000),  # private use
    st.characters(min_codepoint=0x10000, blacklist_categories=("Cs",)),  # astral
    st.characters(whitelist_categories=("Nd", "Nl", "No", "Zs", "Zl", "Zp", "Cc", "Mn", "So", "Lo", "Lm")))
texts = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), tricky,
                           st.text(unusual_char, min_size=1, max_size=4),
                           st.text(st.sampled_from(" \t\n\r\u00a0\u3000"), min_size=1, max_size=6),  # whitespace runs
                           st.from_regex(r"[0-9]{1,6}", fullmatch=True)), max_size=25).map("".join)


@settings(max_examples=1000, deadline=None)
@given(texts)
def test_gpt2_encode_ordinary_equals_tiktoken(text):
    assert OURS.encode_ordinary(text) == THEIRS.encode_ordinary(text)


@pytest.mark.parametrize("text", ["\U0003d000's", "\U0003d000\U0003d000've", "a\U00011de0'll 12\U00011de0", "\uab6c'd",
                                  "\U000105c0's", "\U000e0000's", "\ue000's", "\U0010fffd'm", "x\ud83dy", "\ud83d\ude00's"])
def test_gpt2_known_disagreements_are_gone(text):
    assert OURS.encode_ordinary(text) == THEIRS.encode_ordinary(text)


def tiktoken_class(cls: str) -> set[str]:
    "The code points that tiktoken's regex engine (Rust) puts in `cls`."
    bytes_only = tiktoken.Encoding("probe", pat_str=cls, mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    return set(bytes_only.decode(bytes_only.encode_ordinary(EVERY_CHAR)))


@pytest.mark.parametrize("ours, theirs", [(LETTER, r"\p{L}"), (NUMBER, r"\p{N}"), (r"\s", r"\s")])
def test_character_classes_equal_tiktokens_on_every_code_point(ours, theirs):
    assert set(regex.findall(ours, EVERY_CHAR)) == tiktoken_class(theirs)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_gpt4_split_equals_tiktokens_engine(text):
    "GPT-4's pattern, checked through tiktoken's engine: its pieces, each a token of a vocabulary made of them."
    pieces = pretokenize(text, GPT4_SPLIT)
    vocab = {bytes([b]): b for b in range(256)}
    for p in pieces: vocab.setdefault(p.encode(), len(vocab))
    enc = tiktoken.Encoding("probe", pat_str=CL100K_PATTERN, mergeable_ranks=vocab, special_tokens={})
    assert [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary(text)] == [p.encode() for p in pieces]


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
    assert _learn_merges([p.encode().decode("latin-1") for p in counts], list(counts.values()), n, False) == naive_merges(words, n)


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



def test_training_from_a_file_with_a_byte_order_mark_equals_training_from_its_text(tmp_path):
    "Like io_load_text_file and the token store, training skips a leading UTF-8 byte-order mark."
    from tiny_gpt.io import io_load_text_file
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "the theme then thereafter \ufeff\r\n".encode() * 50)
    text = io_load_text_file(path, verbose=False)
    assert BPETokenizer.train([path], vocab_size=270, progress=False).ranks == BPETokenizer.train(text, vocab_size=270, progress=False).ranks

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
