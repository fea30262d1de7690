"""tiktoken's own tests, adapted to `BPETokenizer.gpt2()`.

tiktoken's test suite (tests/test_encoding.py, test_simple_public.py, test_misc.py, test_offsets.py,
test_pickle.py) exercises the public interface of an `Encoding`. The same checks are rewritten here for
`BPETokenizer`, with tiktoken's method names (they are `BPETokenizer`'s names too), and every expected id
taken from tiktoken's own GPT-2 encoding, built offline from the same files (`gpt2_encoding()`). Where
tiktoken's test used another encoding for a behaviour that GPT-2 also has, the test runs on GPT-2
(r50k_base has GPT-2's ids; the special-token test uses GPT-2's ranks with cl100k's extra special tokens,
compared with a tiktoken `Encoding` built the same way).

Dropped, and why:
- test_simple_regex, the cl100k parts of test_simple / test_basic_encode / test_simple_public.test_simple:
  they pin cl100k_base's ids, and cl100k's files are a download; only GPT-2's ids are checked here.
- test_encode_bytes: `_encode_bytes` is a private tiktoken method (and its expected ids are cl100k's).
- test_encoding_for_model (test_misc, test_simple_public): tiktoken's model-name registry; BPETokenizer has
  no registry (`BPETokenizer.gpt2()` loads GPT-2).
- test_pickle's r50k_base: r50k is GPT-2's vocabulary under another name; the test runs on GPT-2.
- the `ENCODING_FACTORIES` parametrisation over r50k_base and cl100k_base: every test runs on GPT-2 only.
Added, beyond tiktoken's tests: "x" * 1,000,000 as one pre-token within 20 s, with tiktoken's ids.
"""
import pickle
import subprocess
import sys
import time

import pytest
import tiktoken
from hypothesis import given, settings, strategies as st

from tiny_gpt.bpe import BPETokenizer
from tiny_gpt.tokenizers import GPT2_PATTERN, gpt2_encoding

MAX_EXAMPLES = 100  # tiktoken's default
ENC = BPETokenizer.gpt2()
REF = gpt2_encoding()  # tiktoken's GPT-2


# ---------------------------------------------------------------- test_encoding.py
def test_simple():
    assert ENC.encode("hello world") == [31373, 995] == REF.encode("hello world")
    assert ENC.decode([31373, 995]) == "hello world"
    assert ENC.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]


def test_every_token_round_trips_through_its_bytes():
    "tiktoken checks the first 10,000 tokens of each encoding; all 50,257 of GPT-2's here (test_single_token_roundtrip)."
    for token in range(ENC.n_vocab):
        token_bytes = ENC.decode_single_token_bytes(token)
        assert token_bytes == REF.decode_single_token_bytes(token)
        assert ENC.encode_single_token(token_bytes) == token


def test_simple_repeated():
    for n in range(1, 18):
        assert ENC.encode("0" * n) == REF.encode("0" * n)
    assert ENC.encode("0" * 8) == [8269] and ENC.encode("0" * 16) == [25645]
    assert ENC.encode("0" * 17) == [8269, 10535, 830]


def test_basic_encode():
    assert ENC.encode("hello world") == [31373, 995]
    assert ENC.encode(" \x850") == REF.encode(" \x850")  # tiktoken checks this one on cl100k


def test_encode_empty():
    assert ENC.encode("") == [] and ENC.encode_ordinary("") == []


def test_encode_surrogate_pairs():
    assert ENC.encode("👍") == REF.encode("👍")
    assert ENC.encode("\ud83d\udc4d") == ENC.encode("👍")  # a surrogate pair is read as its code point
    assert ENC.encode("\ud83d") == ENC.encode("�") == REF.encode("\ud83d")  # a lone surrogate becomes U+FFFD


@pytest.mark.parametrize("c", ["^", "0", "a", "'s", " ", "\n"])
def test_catastrophically_repetitive(c):
    for big in (c * 10_000, " " + c * 10_000, " " + c * 10_000 + "\n"):
        ids = ENC.encode(big)
        assert ENC.decode(ids) == big
        assert ids == REF.encode(big)


def test_a_million_x_is_one_pre_token_encoded_within_20_seconds():
    big = "x" * 1_000_000
    start = time.perf_counter()
    ids = ENC.encode(big)
    assert time.perf_counter() - start <= 20
    assert ids == REF.encode(big)
    assert ENC.decode(ids) == big


@pytest.mark.parametrize("value", ["hello", "hello ", "hello  ", " hello", " hello ", " hello  ", "hello world",
                                   "请考试我的软件！12345"])
def test_basic_roundtrip(value):
    assert ENC.decode(ENC.encode(value)) == value
    assert ENC.decode(ENC.encode_ordinary(value)) == value


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.text())
def test_hyp_roundtrip(text):
    assert ENC.decode(ENC.encode(text)) == text


def test_special_token():
    "tiktoken's test on cl100k's special tokens: GPT-2's ranks with cl100k's FIM tokens, against tiktoken built alike."
    specials = {"<|endoftext|>": 50256, "<|fim_prefix|>": 50257, "<|fim_middle|>": 50258}
    enc = BPETokenizer(ENC.ranks, specials, "gpt2", "gpt2_fim")
    ref = tiktoken.Encoding("gpt2_fim", pat_str=GPT2_PATTERN, mergeable_ranks=REF._mergeable_ranks, special_tokens=specials)
    eot, fip, fim = (enc.encode_single_token(s) for s in specials)
    assert (eot, fip, fim) == (enc.eot_token, 50257, 50258)

    text = "<|endoftext|> hello <|fim_prefix|>"
    assert eot not in enc.encode(text, disallowed_special=())
    for disallowed in ("all", {"<|endoftext|>"}, {"<|fim_prefix|>"}):
        with pytest.raises(ValueError): enc.encode(text, disallowed_special=disallowed)
    with pytest.raises(ValueError): enc.encode(text)

    text = "<|endoftext|> hello <|fim_prefix|> there <|fim_middle|>"
    for allowed, disallowed, present in [(set(), (), set()), ("all", (), {eot, fip, fim}), ("all", "all", {eot, fip, fim}),
                                         ({"<|fim_prefix|>"}, (), {fip}), ({"<|endoftext|>"}, (), {eot}),
                                         ({"<|fim_middle|>"}, (), {fim})]:
        tokens = enc.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        assert {eot, fip, fim} & set(tokens) == present
        assert tokens == ref.encode(text, allowed_special=allowed, disallowed_special=disallowed)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.text())
def test_hyp_special_ordinary(text):
    assert ENC.encode_ordinary(text) == ENC.encode(text, disallowed_special=())


def test_batch_encode():
    text1, text2 = "hello world", "goodbye world"
    assert ENC.encode_batch([text1]) == [ENC.encode(text1)]
    assert ENC.encode_batch([text1, text2]) == [ENC.encode(text1), ENC.encode(text2)] == REF.encode_batch([text1, text2])
    assert ENC.encode_ordinary_batch([text1]) == [ENC.encode_ordinary(text1)]
    assert ENC.encode_ordinary_batch([text1, text2]) == [ENC.encode_ordinary(text1), ENC.encode_ordinary(text2)]


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.lists(st.text()))
def test_hyp_batch_roundtrip(batch):
    encoded = ENC.encode_batch(batch)
    assert encoded == [ENC.encode(t) for t in batch]
    assert ENC.decode_batch(encoded) == batch


# ---------------------------------------------------------------- test_offsets.py
def offsets_by_prefixes(enc: BPETokenizer, tokens: list[int]) -> list[int]:
    "Where each token starts: the length of the text that the tokens before it decode to, whole characters only."
    text = enc.decode(tokens, errors="strict")
    offsets = []
    for i in range(len(tokens)):
        prefix = enc.decode(tokens[:i], errors="ignore")
        common = 0
        while common < min(len(text), len(prefix)) and text[common] == prefix[common]: common += 1
        offsets.append(common)
    return offsets


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.lists(st.integers(0, 50256), min_size=1, max_size=20))
def test_hyp_offsets(tokens):
    tokens = ENC.encode(ENC.decode(tokens, errors="ignore"), allowed_special="all")  # valid UTF-8, as tiktoken does
    assert ENC.decode_with_offsets(tokens)[1] == offsets_by_prefixes(ENC, tokens)
    assert ENC.decode_with_offsets(tokens) == REF.decode_with_offsets(tokens)


@pytest.mark.parametrize("prompt", ["hello world", "hello world<|endoftext|> green cow", "我非常渴望与人工智能一起工作",
                                    "நடிகர் சூர்யா", " Ġ除"])
def test_basic_offsets(prompt):
    tokens = ENC.encode(prompt, allowed_special="all")
    text, offsets = ENC.decode_with_offsets(tokens)
    assert text == prompt
    assert (text, offsets) == REF.decode_with_offsets(tokens)
    if prompt == "hello world": assert offsets == [0, 5]


# ---------------------------------------------------------------- test_pickle.py
def test_pickle():
    copy = pickle.loads(pickle.dumps(ENC))
    assert copy.encode("hello world") == ENC.encode("hello world")
    custom = BPETokenizer(ENC.ranks, {"<|pickle|>": 100_000}, ENC.pattern, "custom_enc")
    copy = pickle.loads(pickle.dumps(custom))
    assert copy.encode("hello world") == custom.encode("hello world")
    assert custom.encode("<|pickle|>", allowed_special="all") == copy.encode("<|pickle|>", allowed_special="all") == [100_000]


# ---------------------------------------------------------------- test_misc.py / test_simple_public.py
def test_optional_blobfile_dependency():
    subprocess.check_call([sys.executable, "-c", "import sys, tiny_gpt.bpe; assert 'blobfile' not in sys.modules"])
