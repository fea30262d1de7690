"""BPETokenizer against tiktoken on arbitrary text, and the trainer against the naive definition."""
import inspect
import random
import re
import time
from collections import Counter

import pytest
import regex
import tiktoken
import tiktoken_ext.openai_public as openai_public
from hypothesis import given, settings, strategies as st

from tiny_gpt.bpe import (BPETokenizer, count_pairs, merge_word, pretokenize, _learn_merges, count_pretokens, _text_chunks,
                          LETTER, NUMBER, NEWER_LETTERS, NEWER_NUMBERS, GPT4_SPLIT, GPT4_PATTERN)
from tiny_gpt.io import corpus_path
from tiny_gpt.tokenizers import RegexTokenizer, TikTokenizer

CL100K_PATTERN = re.search(r'"pat_str": r"""(.*?)"""', inspect.getsource(openai_public.cl100k_base))[1]  # tiktoken's
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


def test_gpt4_pattern_is_tiktokens_string():
    assert GPT4_PATTERN == CL100K_PATTERN


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
    text = corpus_path(name).read_text(encoding="utf-8")
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
    return BPETokenizer.train(corpus_path("tinyshakespeare.txt"), vocab_size=400, workers=2, progress=False)


def test_training_from_a_file_with_two_workers_equals_training_from_text(shakespeare_tokenizer):
    text = corpus_path("tinyshakespeare.txt").read_text(encoding="utf-8")
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


# ---------------------------------------------------------------- long pre-tokens: the heap merge
# One pre-token is a run of letters, of digits or of other symbols: each alphabet below stays within one class,
# so the whole string is a single piece that the merge must handle at once.
LETTERS = ["ab", "xyz", "abcdefghijklmnopqrstuvwxyz", "αβγδεζ", "абвгдеж", "日本語漢字", "éèêàçñ", "Ab"]
OTHERS = ["=", "=-", "!?.,;:", "#*+/<>", "🦜👍"]
DIGITS = ["0", "01", "0123456789"]
alphabets = st.one_of(*(st.lists(st.sampled_from(group), min_size=1, max_size=3) for group in (LETTERS, OTHERS, DIGITS)))


@settings(max_examples=8, deadline=None)
@given(st.integers(2_000, 200_000), alphabets, st.integers(0, 2**32 - 1))
def test_long_pretokens_equal_tiktoken(n, alphabet, seed):
    text = "".join(random.Random(seed).choices("".join(alphabet), k=n))
    assert pretokenize(text) == [text]  # one pre-token
    assert OURS.encode_ordinary(text) == THEIRS.encode_ordinary(text)


@pytest.mark.parametrize("name, make", [
    ("x * 1,000,000", lambda: "x" * 1_000_000),
    ("200,000 random letters", lambda: "".join(random.Random(0).choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", k=200_000))),
    ("a 1 MB line of =", lambda: "=" * 1_000_000 + "\n"),
])
def test_huge_pretokens_finish_fast_with_tiktokens_ids(name, make):
    text = make()
    start = time.perf_counter()
    ids = BPETokenizer.gpt2().encode(text)
    seconds = time.perf_counter() - start
    assert ids == THEIRS.encode(text)
    assert seconds <= 20, f"{name}: {seconds:.1f} s"


def test_equal_ranks_merge_leftmost_first():
    "aaaaa with aa and aaaa: aa aa a (leftmost first), then aaaa a — as tiktoken's byte_pair_merge does."
    from tiny_gpt.bpe import merge_bytes, merge_bytes_heap
    ranks = {bytes([b]): b for b in range(256)} | {b"aa": 256, b"aaaa": 257, b"aaa": 258}
    enc = tiktoken.Encoding("probe", pat_str=r"\S+", mergeable_ranks=ranks, special_tokens={})
    for n in range(1, 40):
        piece = b"a" * n
        expected = [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary("a" * n)]
        assert merge_bytes_heap(piece, ranks) == merge_bytes(piece, ranks) == expected


# ---------------------------------------------------------------- the word cache is bounded
def test_word_cache_is_bounded_on_a_stream_of_distinct_words():
    tok = BPETokenizer.gpt2()
    tok.cache_size = 500
    for start in range(0, 20_000, 2_000):
        text = " ".join(f"q{i}z" for i in range(start, start + 2_000))  # every word new
        assert tok.encode(text) == THEIRS.encode(text)
        assert len(tok._cache) <= 500


def test_long_pieces_are_not_cached():
    tok = BPETokenizer.gpt2()
    tok.encode("y" * 5_000 + " short")
    assert list(tok._cache) == [" short"]


# ---------------------------------------------------------------- ids in, as the other tokenizers take them
def test_a_single_int_is_refused_like_the_other_tokenizers():
    regex_tok = RegexTokenizer("hello world")
    for tok in (OURS, TikTokenizer("gpt2"), regex_tok):
        with pytest.raises(TypeError, match="got the single id 15496: write \\[15496\\]"): tok.decode(15496)
        with pytest.raises(TypeError, match="sequence of integers"): tok.decode("15496")


@pytest.mark.parametrize("ids, message", [([1, 50257], "cannot decode 50257 \\(position 1\\)"), ([-1], "cannot decode -1"),
                                          ([3, "a"], "cannot decode 'a' \\(position 1\\)"), ([None], "cannot decode None")])
def test_invalid_ids_are_named(ids, message):
    with pytest.raises(ValueError, match=message): OURS.decode(ids)


def test_ids_as_numpy_and_torch():
    import numpy as np, torch
    ids = THEIRS.encode("hello world")
    assert OURS.decode(np.array(ids)) == OURS.decode(torch.tensor(ids)) == OURS.decode(tuple(ids)) == "hello world"


# ---------------------------------------------------------------- per-call special-token arguments, as tiktoken
SPECIAL_CHOICES = [None, "all", set(), {"<|endoftext|>"}]  # tiktoken takes "all" or a set


@settings(max_examples=150, deadline=None)
@given(texts, st.sampled_from(SPECIAL_CHOICES), st.sampled_from(["all", (), {"<|endoftext|>"}]),
       st.sampled_from(["all", frozenset()]))
def test_per_call_special_arguments_follow_tiktoken(text, allowed, disallowed, constructor):
    ours = OURS_ALL if constructor == "all" else OURS
    effective = constructor if allowed is None else allowed  # omitted: the tokenizer's own setting applies
    try: expected = THEIRS.encode(text, allowed_special=effective, disallowed_special=disallowed)
    except ValueError: expected = ValueError
    kwargs = {} if allowed is None else {"allowed_special": allowed}
    try: got = ours.encode(text, disallowed_special=disallowed, **kwargs)
    except ValueError: got = ValueError
    assert got == expected


def test_unknown_special_tokens_are_refused():
    with pytest.raises(ValueError, match="which 'gpt2' does not have"): OURS.encode("x", allowed_special={"<|fim|>"})
    with pytest.raises(ValueError, match="which 'gpt2' does not have"): OURS.encode("x", disallowed_special={"<|fim|>"})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=30), st.sampled_from(["replace", "ignore", "strict", "backslashreplace"]))
def test_decode_errors_follow_tiktoken(ids, errors):
    try: expected = THEIRS.decode(ids, errors=errors)
    except UnicodeDecodeError: expected = UnicodeDecodeError
    try: got = OURS.decode(ids, errors=errors)
    except UnicodeDecodeError: got = UnicodeDecodeError
    assert got == expected


def test_decode_refuses_an_unknown_error_mode():
    with pytest.raises(ValueError, match="errors must be 'replace', 'strict' or 'ignore'"): OURS.decode([1], errors="loud")


FLOAT_IDS = [([1.0], "cannot decode 1.0 \\(position 0\\): ids are integers"),
             ([262, 2.0], "cannot decode 2.0 \\(position 1\\)"),
             ([True], "cannot decode True \\(position 0\\)"),
             ("numpy float", "cannot decode 1.0 \\(position 0\\)"), ("numpy bool", "cannot decode True"),
             ("torch float", "cannot decode 1.0 \\(position 0\\)")]


@pytest.mark.parametrize("tok", [OURS, TikTokenizer("gpt2"), RegexTokenizer("hello world .")],
                         ids=["bpe", "tiktoken", "regex"])
@pytest.mark.parametrize("ids, message", FLOAT_IDS, ids=lambda x: str(x)[:12])
def test_every_tokenizer_refuses_ids_that_are_not_integers(tok, ids, message):
    "1.0 and True are not read as the id 1: all three tokenizers refuse them with the same message."
    import numpy as np, torch
    ids = {"numpy float": np.array([1.0]), "numpy bool": np.array([True]),
           "torch float": torch.tensor([1.0])}.get(ids, ids) if isinstance(ids, str) else ids
    with pytest.raises(ValueError, match=message): tok.decode(ids)


def test_integer_ids_of_every_kind_still_decode():
    import numpy as np, torch
    for ids in ([31373, 995], (31373, 995), np.array([31373, 995], dtype=np.uint16),
                [np.int64(31373), np.int32(995)], torch.tensor([31373, 995]), [torch.tensor(31373), 995]):
        assert OURS.decode(ids) == THEIRS.decode([31373, 995]) == "hello world", ids
        assert TikTokenizer("gpt2").decode(ids) == "hello world"
    assert OURS.decode_tokens_bytes(np.array([31373])) == [b"hello"]


# ---------------------------------------------------------------- a tokenizer as data

def test_tokenizer_info_of_a_bpe_is_its_saved_file(tmp_path):
    "The info is the file `save` writes, without its format and version; it survives JSON and a weights-only load."
    import json
    import torch
    from tiny_gpt.bpe import tokenizer_from_info, tokenizer_info
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    bpe = BPETokenizer.train(text, vocab_size=300, progress=False)
    saved = json.loads(bpe.save(tmp_path / "bpe.json").read_text(encoding="utf-8"))
    info = tokenizer_info(bpe)
    assert info == {k: v for k, v in saved.items() if k not in ("format", "version")} | {"kind": "bpe"}
    assert json.loads(json.dumps(info)) == info
    torch.save({"tokenizer": info}, tmp_path / "ckpt.pt")
    back = tokenizer_from_info(torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"])
    assert back.encode(text) == bpe.encode(text) and back.special_tokens == bpe.special_tokens


def test_gpt2_rebuilt_from_its_info_gives_tiktokens_ids():
    from tiny_gpt.bpe import tokenizer_from_info, tokenizer_info
    rebuilt = tokenizer_from_info(tokenizer_info(BPETokenizer.gpt2()))
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    assert rebuilt.encode(text) == TikTokenizer("gpt2").encode(text)  # tiktoken's own GPT-2, from local files
    assert tokenizer_from_info(tokenizer_info(TikTokenizer("gpt2"))).encode(text) == TikTokenizer("gpt2").encode(text)
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        tokenizer_from_info({"kind": "RegexTokenizer", "n_vocab": 9})
