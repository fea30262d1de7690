"""Properties of the tokenizers that single examples in a notebook cannot show."""
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from tiny_gpt.tokenizers import RegexTokenizer, TikTokenizer, regex_split, show_tokens

GPT2 = TikTokenizer("gpt2", {"<|endoftext|>"})
PLAIN = TikTokenizer("gpt2")
WORDS = ["I", "HAD", "always", "thought", "Jack", "Gisburn", "rather", "a", "cheap", "genius"]
RT = RegexTokenizer(" ".join(WORDS) + ' , . : ; ? _ ! " ( ) \' --')
PUNCT = [",", ".", ":", ";", "?", "_", "!", '"', "(", ")", "'", "--"]

any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_gpt2_round_trips_any_text(text):
    assume_no_special = text.replace("<|endoftext|>", "")
    ids = PLAIN.encode(assume_no_special)
    assert PLAIN.decode(ids) == assume_no_special
    assert all(0 <= i < 50256 for i in ids)  # plain text never produces the special id
    assert PLAIN.count_tokens(assume_no_special) == len(ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Hello", " world", "<|endoftext|>", "\n", " ", "tea?"]), max_size=30))
def test_endoftext_is_one_token_exactly_where_it_appears(pieces):
    text = "".join(pieces)
    ids = GPT2.encode(text)
    assert ids.count(50256) == text.count("<|endoftext|>")
    assert GPT2.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS + PUNCT), max_size=40))
def test_regex_tokenizer_round_trips_known_tokens(tokens):
    text = " ".join(tokens)
    ids = RT.encode(text)
    assert [RT.int_to_str[i] for i in ids] == regex_split(text)
    assert RT.encode(RT.decode(ids)) == ids  # decoding loses spacing, never tokens


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_regex_tokenizer_ids_stay_in_the_vocabulary(text):
    ids = RT.encode(text)
    assert all(0 <= i < len(RT.str_to_int) for i in ids)
    assert len(ids) == len(regex_split(text))


@settings(max_examples=100, deadline=None)
@given(any_text)
def test_show_tokens_pieces_cover_the_text(text):
    text = text.replace("<|endoftext|>", "")
    view = show_tokens(text, PLAIN)
    assert view.ids == PLAIN.encode(text)
    html = view._repr_html_()
    assert html.count("<span") == len(view.ids)


@pytest.mark.parametrize("bad, match", [
    ([50257], "cannot decode 50257"), ([-5], "integers in \\[0, 50257\\)"), ([2**70], "cannot decode"),
    ([None], "cannot decode None"), (["15496"], "cannot decode '15496'"), ([True], "cannot decode True"),
])
def test_gpt2_decode_refuses_bad_ids(bad, match):
    with pytest.raises(ValueError, match=match):
        PLAIN.decode(bad)


@pytest.mark.parametrize("text", ["<|endoftext|>", "a<|endoftext|>b", "x " * 1000 + "<|endoftext|>"])
def test_disallowed_special_text_names_the_fix(text):
    with pytest.raises(ValueError, match=r"allowed_special=\{'<\|endoftext\|>'\}"):
        PLAIN.encode(text)


@pytest.mark.parametrize("name", ["gpt-2", "GPT2", "", "cl100k"])
def test_unknown_encoding_names_are_refused_without_network(name):
    with pytest.raises(ValueError, match="unknown encoding"):
        TikTokenizer(name)


def test_gpt2_needs_no_network(tmp_path):
    "A fresh process with every socket refused and an empty tiktoken cache still encodes GPT-2."
    script = textwrap.dedent("""
        import socket
        def refuse(*a, **k): raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from tiny_gpt.tokenizers import TikTokenizer
        tok = TikTokenizer("gpt2", {"<|endoftext|>"})
        print(tok.encode("Hello, do you like tea? <|endoftext|>"))
    """)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-cache"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[15496, 11, 466, 345, 588, 8887, 30, 220, 50256]"


def test_regex_tokenizer_on_the_verdict_is_closed_under_its_own_vocabulary():
    from tiny_gpt.io import io_load_text_file
    text = io_load_text_file(verbose=False)
    rt = RegexTokenizer(text)
    ids = rt.encode(text)
    assert rt.str_to_int["<|unk|>"] not in ids  # every token of the training text is in the vocabulary
    assert regex_split(rt.decode(ids)) == regex_split(text)
