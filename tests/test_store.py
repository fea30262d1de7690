"""Token store (tiny_gpt.store): safe cuts, ids equal whole-document encoding, shards, header checks, CLI, pickling."""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tiny_gpt.cli import BadInput
from tiny_gpt.io import corpus_path
from tiny_gpt.store import (_encoding, _next_cut, first_safe_cut, open_store, parse_shard, prepare_store,
                            shard_stem)

ENC = _encoding("gpt2")
EOT = ENC.eot_token

# Unicode's White_Space property (PropList.txt): what `\s` means in tiktoken's (Rust) regex
WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]

# Texts made mostly of whitespace runs of every kind, next to letters, digits, punctuation and contractions
PARTS = [" ", "  ", "\n", "\n\n", "\r\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000",
         "a", "Bc", "é", "中文", "1", "234", "'s", "'", "'ll", ".", "!?", "--", "<|endoftext|>", "x y", "\U0001F600"]
texts = st.lists(st.sampled_from(PARTS), max_size=40).map("".join)


def encode(text: str) -> list[int]:
    return ENC.encode_ordinary(text)


def all_cuts(data: bytes) -> list[int]:
    cuts, p = [], 0
    while (p := first_safe_cut(data, p + 1)) is not None: cuts.append(p)
    return cuts


def store_ids(folder: Path, split: str = "train") -> list[int]:
    return np.concatenate(open_store(folder, split=split).shards).tolist()


@pytest.fixture(scope="module")
def corpora() -> tuple[Path, Path]:
    "The Verdict and Tiny Shakespeare: missing data is an error naming the file and TINY_GPT_DATA, never a skip."
    return corpus_path("the-verdict.txt"), corpus_path("tinyshakespeare.txt")


# ---------------------------------------------------------------- safe cuts

def test_python_whitespace_covers_unicode_white_space():
    "str.isspace() is true for every White_Space character, so refusing isspace() characters is conservative."
    assert all(chr(c).isspace() for c in WHITE_SPACE)


def test_naive_cut_in_newline_run_changes_ids():
    assert encode("\n\n\n") == [628, 198]
    assert encode("\n") * 3 == [198, 198, 198]
    assert first_safe_cut(b"\n\n\n") is None


@settings(max_examples=1500, deadline=None)
@given(texts)
def test_every_safe_cut_keeps_ids(text):
    data = text.encode()
    whole = encode(text)
    for p in all_cuts(data):
        assert encode(data[:p].decode()) + encode(data[p:].decode()) == whole, (text, p)


@settings(max_examples=300, deadline=None)
@given(texts, st.integers(0, 80), st.integers(1, 16))
def test_next_cut_reads_a_file_in_blocks(text, target, block):
    "The first safe cut at or after `target` and before the end, found by reading the file `block` bytes at a time."
    data = text.encode()
    later = [c for c in all_cuts(data) if c >= target]
    assert _next_cut(io.BytesIO(data), target, len(data), block) == (later[0] if later else len(data))


@pytest.mark.parametrize("c", [chr(c) for c in WHITE_SPACE if c > 0x7F] + ["\x1c", "\x1f"])
def test_cuts_next_to_unusual_whitespace(c):
    for text in (f"a{c} b", f"a{c}\nb", f"{c}{c}\n\nx", f"x\n{c}y", f"x{c}"):
        data = text.encode()
        for p in all_cuts(data):
            assert encode(data[:p].decode()) + encode(data[p:].decode()) == encode(text), (text, p)


# ---------------------------------------------------------------- store ids == whole-document encoding

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(texts, min_size=1, max_size=4), st.integers(1, 48), st.sampled_from([0.0, 0.1, 0.5]))
def test_store_equals_whole_encoding(tmp_path_factory, documents, chunk_bytes, val_fraction):
    folder = tmp_path_factory.mktemp("docs")
    paths = []
    for i, text in enumerate(documents):
        (path := folder / f"doc{i}.txt").write_bytes(text.encode())
        paths.append(path)
    if not any(documents):  # no text at all: refused, and nothing is written
        with pytest.raises(BadInput, match="the input holds no text"):
            prepare_store(paths, folder / "store", workers=0, progress=False)
        assert not (folder / "store").exists()
        return
    out = prepare_store(paths, folder / "store", chunk_bytes=chunk_bytes, val_fraction=val_fraction, workers=0, progress=False)
    header = json.loads((out / "shard-00000-of-00001.json").read_text(encoding="utf-8"))
    read = {s: np.fromfile(out / header["splits"][s]["file"], dtype="<u2").tolist() for s in header["splits"]}
    expected_train, expected_val = [], []
    for src, text in zip(header["sources"], documents):  # rebuild each split from the per-document counts
        ids = encode(text)
        n_train = src["n_tokens"]["train"] - (1 if src["n_tokens"]["train"] else 0)
        train, val = ids[:n_train], ids[n_train:]
        if train: expected_train += train + [EOT]
        if val: expected_val += val + [EOT]
        assert len(val) + (1 if val else 0) == src["n_tokens"].get("val", 0)
    assert read["train"] == expected_train
    assert read.get("val", []) == expected_val


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_both_corpora_with_two_workers(tmp_path, corpora, executor):
    verdict, shakespeare = corpora
    out = prepare_store([verdict, shakespeare], tmp_path / "s", chunk_bytes=1 << 14, workers=2, executor=executor,
                        progress=False)
    expected = encode(verdict.read_text(encoding="utf-8")) + [EOT] + encode(shakespeare.read_text(encoding="utf-8")) + [EOT]
    assert store_ids(out) == expected
    assert open_store(out).n_tokens == 5145 + 338_025 + 2


def test_validation_tail_of_shakespeare(tmp_path, corpora):
    shakespeare = corpora[1]
    out = prepare_store(shakespeare, tmp_path / "s", val_fraction=0.1, chunk_bytes=1 << 15, workers=2, progress=False)
    train, val = store_ids(out), store_ids(out, "val")
    assert train[:-1] + val[:-1] == encode(shakespeare.read_text(encoding="utf-8"))
    assert 0.09 < len(val) / (len(train) + len(val)) < 0.11


def test_windows_line_ends_and_a_chunk_without_cuts(tmp_path):
    text = "line one\r\nline two\r\n" * 50 + "x" * 5000 + "\n" * 3000 + "end\r\n"
    (tmp_path / "a.txt").write_bytes(text.encode())
    out = prepare_store(tmp_path / "a.txt", tmp_path / "s", chunk_bytes=64, workers=0, progress=False)
    assert store_ids(out) == encode(text) + [EOT]


@pytest.mark.parametrize("val_fraction", [0.0, 0.5])
def test_a_byte_order_mark_is_skipped_as_io_load_text_file_does(tmp_path, val_fraction):
    "A Windows 'UTF-8 with BOM' file gives the same ids as the text io_load_text_file reads from it."
    from tiny_gpt.io import io_load_text_file
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "Caf\u00e9 society.\r\n\ufeffSecond line, same file.\r\n".encode() * 40)
    text = io_load_text_file(path, verbose=False)
    assert not text.startswith("\ufeff") and text.count("\ufeff") == 40  # only the mark itself goes
    out = prepare_store(path, tmp_path / "s", val_fraction=val_fraction, chunk_bytes=128, workers=0, progress=False)
    ids = store_ids(out)[:-1] + (store_ids(out, "val")[:-1] if val_fraction else [])
    assert ids == encode(text)


def test_utf16_is_refused_with_its_name(tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_text("Hello", encoding="utf-16")
    with pytest.raises(BadInput, match="is UTF-16"): prepare_store(path, tmp_path / "s", workers=0, progress=False)
    assert not (tmp_path / "s").exists()  # the folder it would have created is not left behind


def test_folder_inputs_and_empty_documents(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "in" / "sub" / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "in" / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "in" / "notes.md").write_text("ignored", encoding="utf-8")
    out = prepare_store(tmp_path / "in", tmp_path / "s", progress=False)
    assert store_ids(out) == encode("second") + [EOT] + encode("first") + [EOT]  # sorted: b, empty, sub/a
    header = json.loads((out / "shard-00000-of-00001.json").read_text(encoding="utf-8"))
    assert [Path(s["path"]).name for s in header["sources"]] == ["b.txt", "empty.txt", "a.txt"]
    assert header["splits"]["train"]["n_documents"] == 2


# ---------------------------------------------------------------- atomic writes

def test_an_existing_shard_is_refused_unless_overwrite(tmp_path):
    "Today's trap: preparing into a folder that holds a store silently replaced it."
    (tmp_path / "a.txt").write_text("first words", encoding="utf-8")
    (tmp_path / "b.txt").write_text("other words entirely", encoding="utf-8")
    prepare_store(tmp_path / "a.txt", tmp_path / "s", workers=0, progress=False)
    with pytest.raises(BadInput, match="already holds shard 0/1 .*replace it with overwrite=True"):
        prepare_store(tmp_path / "b.txt", tmp_path / "s", workers=0, progress=False)
    assert store_ids(tmp_path / "s") == encode("first words") + [EOT]  # untouched
    prepare_store(tmp_path / "b.txt", tmp_path / "s", workers=0, progress=False, overwrite=True)
    assert store_ids(tmp_path / "s") == encode("other words entirely") + [EOT]
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["shard-00000-of-00001.json", "shard-00000-of-00001.run2.train.bin"]  # run 1's files are gone


def test_overwrite_keeps_the_old_store_readable_until_the_new_one_is_complete(tmp_path, monkeypatch):
    import tiny_gpt.store as store
    (tmp_path / "a.txt").write_text("old " * 500, encoding="utf-8")
    (tmp_path / "b.txt").write_text("new " * 500, encoding="utf-8")
    prepare_store(tmp_path / "a.txt", tmp_path / "s", chunk_bytes=100, workers=0, progress=False)
    old_ids, seen, encode_piece = store_ids(tmp_path / "s"), [], store._encode_piece

    def reading_meanwhile(*args):
        seen.append(store_ids(tmp_path / "s"))  # a reader that opens the store while the new one is written
        return encode_piece(*args)

    monkeypatch.setattr(store, "_encode_piece", reading_meanwhile)
    store.prepare_store(tmp_path / "b.txt", tmp_path / "s", chunk_bytes=100, workers=0, progress=False, overwrite=True)
    assert len(seen) > 3 and all(ids == old_ids for ids in seen)
    assert store_ids(tmp_path / "s") == encode("new " * 500) + [EOT]


def test_interrupted_overwrite_leaves_the_old_store_intact(tmp_path, monkeypatch):
    import tiny_gpt.store as store
    (tmp_path / "a.txt").write_text("word " * 2000, encoding="utf-8")
    prepare_store(tmp_path / "a.txt", tmp_path / "s", chunk_bytes=100, workers=0, progress=False)
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    calls, encode_piece = [], store._encode_piece

    def failing(*args):
        calls.append(1)
        if len(calls) > 3: raise KeyboardInterrupt
        return encode_piece(*args)

    monkeypatch.setattr(store, "_encode_piece", failing)
    with pytest.raises(KeyboardInterrupt):
        store.prepare_store(tmp_path / "a.txt", tmp_path / "s", chunk_bytes=100, workers=0, progress=False,
                            overwrite=True)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before  # no new file, no temporary file
    assert store_ids(tmp_path / "s") == encode("word " * 2000) + [EOT]


@pytest.mark.parametrize("content", [b"\xff\xfeH\x00i\x00", b"\x00\x01binary\xff\xfe\xfd" * 50, b"caf\xe9 au lait"],
                         ids=["utf-16", "binary", "latin-1"])
def test_a_failed_prepare_leaves_no_folder_behind(tmp_path, content):
    "Today's trap: a failed prepare left an empty --out folder (and its parents) behind."
    (tmp_path / "in.txt").write_bytes(content)
    with pytest.raises(BadInput):
        prepare_store(tmp_path / "in.txt", tmp_path / "new" / "store", chunk_bytes=8, workers=0, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_failed_shard_keeps_what_other_runs_wrote(tmp_path, three_docs):
    "Another machine's shard in the same new folder stays when this one fails."
    paths, _ = three_docs
    prepare_store(paths, tmp_path / "s", shard="0/2", progress=False)
    paths[1].write_bytes(b"caf\xe9")  # document 1 belongs to shard 1
    with pytest.raises(BadInput, match="is not valid UTF-8"): prepare_store(paths, tmp_path / "s", shard="1/2", progress=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["shard-00000-of-00002.json",
                                                                 "shard-00000-of-00002.run1.train.bin"]


def test_mixed_splittings_are_refused_when_preparing(tmp_path, three_docs):
    "Today's trap: --shard 0/2 into a folder of 0/1 was accepted and failed only when loading."
    paths, _ = three_docs
    prepare_store(paths, tmp_path / "s", progress=False)
    for overwrite in (False, True):
        with pytest.raises(BadInput, match="holds a store in 1 shard.*shard 0/2 would mix two splittings"):
            prepare_store(paths, tmp_path / "s", shard="0/2", progress=False, overwrite=overwrite)
    assert open_store(tmp_path / "s").header["n_shards"] == 1


def test_an_input_without_text_is_refused(tmp_path):
    "Today's trap: empty inputs made a store that failed only when loading."
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(BadInput, match="the input holds no text: its 2 document"):
        prepare_store([tmp_path / "empty.txt", tmp_path / "bom.txt"], tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_out_naming_a_file_is_refused_clearly(tmp_path):
    "Today's trap: `[Errno 17] File exists`."
    (tmp_path / "a.txt").write_text("words", encoding="utf-8")
    with pytest.raises(BadInput, match="a.txt' is a file; a token store is a folder"):
        prepare_store(tmp_path / "a.txt", tmp_path / "a.txt", progress=False)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "words"


def test_gpt2_pattern_is_not_written_out_again():
    "The store's cut rules use tiny_gpt.tokenizers' GPT-2 pattern and tiktoken's, not a copy of its own."
    from tiktoken_ext.openai_public import r50k_pat_str
    import tiny_gpt.store as store
    from tiny_gpt.tokenizers import GPT2_PATTERN
    assert store._CUTTABLE_PATTERNS == {GPT2_PATTERN, r50k_pat_str}
    source = Path(store.__file__).read_text(encoding="utf-8")
    assert r"\p{L}" not in source  # no regex of GPT-2's pre-tokenizer spelled out in the module


def test_a_source_that_changes_during_the_run_is_refused(tmp_path, monkeypatch):
    "Workers read their pieces themselves, so prepare_store checks that no source changed while it ran."
    import tiny_gpt.store as store
    (tmp_path / "a.txt").write_text("word " * 2000, encoding="utf-8")
    encode_piece = store._encode_piece

    def appending(*args):
        with open(tmp_path / "a.txt", "a", encoding="utf-8") as f: f.write("more ")
        return encode_piece(*args)

    monkeypatch.setattr(store, "_encode_piece", appending)
    with pytest.raises(ValueError, match="a.txt' changed while being prepared"):
        store.prepare_store(tmp_path / "a.txt", tmp_path / "s", chunk_bytes=100, workers=0, progress=False)
    assert not list((tmp_path / "s").glob("*.json"))


# ---------------------------------------------------------------- shards

@pytest.fixture
def three_docs(tmp_path):
    texts = ["The first document.\n", "A second one,\n\nwith two paragraphs.", "Third!"]
    paths = []
    for i, t in enumerate(texts):
        (p := tmp_path / f"d{i}.txt").write_text(t, encoding="utf-8")
        paths.append(p)
    return paths, texts


def test_shards_read_as_one_store(tmp_path, three_docs):
    paths, texts = three_docs
    for k in (1, 0):
        prepare_store(paths, tmp_path / "s", shard=f"{k}/2", progress=False)
    store = open_store(tmp_path / "s")
    assert [h["shard"]["index"] for h in store.headers] == [0, 1]
    expected = [encode(texts[i]) + [EOT] for i in (0, 2, 1)]  # shard 0: documents 0 and 2; shard 1: document 1
    assert np.concatenate(store.shards).tolist() == sum(expected, [])
    assert store.header["n_documents"] == 3 and store.header["n_shards"] == 2


@pytest.mark.parametrize("n_shards, val_fraction", [(2, 0.0), (3, 0.3)])
def test_sharded_store_equals_its_documents_prepared_alone(tmp_path, n_shards, val_fraction):
    """Shard K of N is byte for byte the store of documents K, K+N, ... prepared alone; each document's ids are those
    of the unsharded store; and the data loader's windows over the shards (none crosses a shard) are those of the
    per-shard stores one after the other. (They are not the unsharded store's windows: documents are grouped by
    shard, and windows that would span two shards are not made.)"""
    import torch
    from tiny_gpt.data import TokenStoreDataset
    texts = [f"Document {i}.\n\n" + "word " * (7 * i + 3) + ("\n" if i % 2 else "") for i in range(7)]
    paths = []
    for i, t in enumerate(texts):
        (path := tmp_path / f"d{i}.txt").write_text(t, encoding="utf-8")
        paths.append(path)
    for k in range(n_shards):
        prepare_store(paths, tmp_path / "sharded", shard=f"{k}/{n_shards}", val_fraction=val_fraction, chunk_bytes=16,
                      workers=0, progress=False)
        prepare_store(paths[k::n_shards], tmp_path / f"alone{k}", val_fraction=val_fraction, progress=False)
    prepare_store(paths, tmp_path / "whole", val_fraction=val_fraction, chunk_bytes=16, workers=0, progress=False)
    splits = ["train", "val"] if val_fraction else ["train"]
    def token_file(folder: Path, stem: str, split: str) -> bytes:
        header = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
        return (folder / header["splits"][split]["file"]).read_bytes()

    for k in range(n_shards):
        for split in splits:
            assert (token_file(tmp_path / "sharded", shard_stem(k, n_shards), split)
                    == token_file(tmp_path / f"alone{k}", shard_stem(0, 1), split))

    def runs(folder: Path, split: str) -> dict[str, list[int]]:
        "Each document's ids (with its <|endoftext|>) in `split`, by source path."
        out = {}
        for header, shard in zip(open_store(folder, split).headers, open_store(folder, split).shards):
            ids, at = shard.tolist(), 0
            for src in header["sources"]:
                out[src["path"]] = ids[at:at + src["n_tokens"][split]]; at += src["n_tokens"][split]
        return out

    for split in splits:
        assert runs(tmp_path / "sharded", split) == runs(tmp_path / "whole", split)
        sharded = TokenStoreDataset(open_store(tmp_path / "sharded", split).shards, max_length=4, stride=3)
        alone = [TokenStoreDataset(open_store(tmp_path / f"alone{k}", split).shards, max_length=4, stride=3)
                 for k in range(n_shards)]
        assert len(sharded) == sum(len(a) for a in alone)
        got = sharded.__getitems__(list(range(len(sharded))))
        assert torch.equal(got.inputs, torch.cat([a.__getitems__(list(range(len(a)))).inputs for a in alone]))
        assert torch.equal(got.targets, torch.cat([a.__getitems__(list(range(len(a)))).targets for a in alone]))


def test_more_shards_than_documents(tmp_path, three_docs):
    paths, texts = three_docs
    for k in range(5): prepare_store(paths, tmp_path / "s", shard=(k, 5), progress=False)
    store = open_store(tmp_path / "s")
    assert len(store.headers) == 5 and len(store.shards) == 3  # empty shards hold no memmap


def test_missing_and_mixed_shards(tmp_path, three_docs):
    paths, _ = three_docs
    prepare_store(paths, tmp_path / "s", shard="2/3", progress=False)
    with pytest.raises(FileNotFoundError, match=r"lacks shards 0/3, 1/3: run `tiny-gpt prepare \.\.\. --out .* --shard K/3`"):
        open_store(tmp_path / "s")
    for k in (0, 1): prepare_store(paths, tmp_path / "s", shard=f"{k}/3", progress=False)
    header_file = tmp_path / "s" / f"{shard_stem(1, 3)}.json"
    h = json.loads(header_file.read_text(encoding="utf-8"))
    header_file.write_text(json.dumps(h | {"tokenizer": "r50k_base"}), encoding="utf-8")
    with pytest.raises(ValueError, match="disagree on tokenizer .*shard-00001-of-00003.json: 'r50k_base'"):
        open_store(tmp_path / "s")


def test_parse_shard_errors():
    assert parse_shard("0/1") == (0, 1)
    for bad in ("1/1", "-1/2", "3", "a/b", "2/0"):
        with pytest.raises(ValueError): parse_shard(bad)


# ---------------------------------------------------------------- header checks

@pytest.fixture
def verdict_store(tmp_path):
    text = "It had always been a fair story.\n" * 40
    (tmp_path / "v.txt").write_text(text, encoding="utf-8")
    return prepare_store(tmp_path / "v.txt", tmp_path / "store", val_fraction=0.25, progress=False)


def _edit_header(folder: Path, **changes):
    file = folder / "shard-00000-of-00001.json"
    file.write_text(json.dumps(json.loads(file.read_text(encoding="utf-8")) | changes), encoding="utf-8")


@pytest.mark.parametrize("damage, error, match", [
    (lambda d: (d / "shard-00000-of-00001.run1.train.bin").unlink(), FileNotFoundError, r"train.bin' is missing .*prepare shard 0/1 again"),
    (lambda d: (d / "shard-00000-of-00001.json").write_text("{", encoding="utf-8"), ValueError, "is not a valid store header"),
    (lambda d: _edit_header(d, version=99), ValueError, "is not a version-1 or version-2 tiny_gpt.token_store header"),
    (lambda d: _edit_header(d, dtype="uint32"), ValueError, "the file is truncated or has the wrong dtype"),
    (lambda d: _edit_header(d, dtype="uint8"), ValueError, "declares dtype 'uint8', which cannot hold 50257 token ids"),
    (lambda d: (d / "shard-00000-of-00001.run1.train.bin").write_bytes(b"\0" * 10), ValueError, "has 10 bytes but its header promises"),
    (lambda d: (d / "shard-00000-of-00001.json").unlink(), FileNotFoundError, "holds no token store header"),
])
def test_damaged_store_errors(verdict_store, damage, error, match):
    damage(verdict_store)
    with pytest.raises(error, match=match): open_store(verdict_store)


def test_checksum_is_verified_unless_skipped(verdict_store):
    file = verdict_store / "shard-00000-of-00001.run1.train.bin"
    data = bytearray(file.read_bytes()); data[-3] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupted: the SHA-256 of its tokens"): open_store(verdict_store)
    with pytest.raises(ValueError, match="is corrupted"): open_store(verdict_store, verify=True)
    assert open_store(verdict_store, verify=False).n_tokens > 0


def test_split_and_tokenizer_errors(verdict_store, tmp_path):
    assert open_store(verdict_store, "val").n_tokens > 0
    with pytest.raises(ValueError, match="has no 'test' split .*'train', 'val'"): open_store(verdict_store, "test")
    with pytest.raises(ValueError, match="tokenized with 'gpt2', but 'p50k_base' is expected"):
        open_store(verdict_store, tokenizer="p50k_base")
    with pytest.raises(FileNotFoundError, match="no token store at"): open_store(tmp_path / "nothing")
    with pytest.raises(ValueError, match="does not use GPT-2's pre-tokenizer"):
        prepare_store(tmp_path / "v.txt", tmp_path / "o", tokenizer="cl100k_base")
    (tmp_path / "nospace.txt").write_text("abc", encoding="utf-8")
    out = prepare_store(tmp_path / "nospace.txt", tmp_path / "o2", val_fraction=0.5, progress=False)
    with pytest.raises(ValueError, match="'val' split of .* holds no tokens"): open_store(out, "val")


# ---------------------------------------------------------------- pickling / processes

def test_store_pickles_small_and_reopens_in_a_spawned_process(verdict_store):
    store = open_store(verdict_store)
    blob = pickle.dumps(store)
    assert len(blob) < 10_000
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        shards = pool.apply(getattr, (store, "shards"))  # unpickled (memmaps reopened) in the child, sent back
    assert [s.tolist() for s in shards] == [s.tolist() for s in store.shards]


def test_prepare_with_spawned_workers(tmp_path, corpora):
    "What Windows and macOS do: worker processes started with spawn rebuild the encoding offline."
    code = ("import multiprocessing as mp, sys\n"
            "from tiny_gpt.store import prepare_store\n"
            "if __name__ == '__main__':\n"
            "    mp.set_start_method('spawn')\n"
            "    prepare_store(sys.argv[1], sys.argv[2], chunk_bytes=1 << 16, workers=2, progress=False)\n")
    script = tmp_path / "run.py"
    script.write_text(code, encoding="utf-8")
    env = os.environ | {"TIKTOKEN_CACHE_DIR": str(tmp_path / "no-cache"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    subprocess.run([sys.executable, str(script), str(corpora[1]), str(tmp_path / "s")], check=True, env=env, timeout=120)
    assert store_ids(tmp_path / "s") == encode(corpora[1].read_text(encoding="utf-8")) + [EOT]


# ---------------------------------------------------------------- command line

def _tiny_gpt() -> list[str]:
    exe = Path(sys.executable).with_name("tiny-gpt")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from tiny_gpt.cli import main; sys.exit(main())"]


def test_cli_prepare_shards(tmp_path, three_docs):
    paths, texts = three_docs
    for k in range(2):
        result = subprocess.run([*_tiny_gpt(), "prepare", *map(str, paths), "--out", str(tmp_path / "s"),
                                 "--shard", f"{k}/2", "--val-fraction", "0.3", "--workers", "1"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"wrote shard {k}/2 of" in result.stdout
    train, val = open_store(tmp_path / "s"), open_store(tmp_path / "s", "val")
    assert train.n_tokens + val.n_tokens == sum(len(encode(t)) for t in texts) + 3 + val.header["n_documents"]


def test_cli_prepare_errors(tmp_path):
    result = subprocess.run([*_tiny_gpt(), "prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "missing.txt' does not exist" in result.stderr
    result = subprocess.run([*_tiny_gpt(), "prepare", str(tmp_path), "--out", str(tmp_path / "s"), "--shard", "2/2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "K counts from 0" in result.stderr


# ---------------------------------------------------------------- other tokenizers: char, a saved BPE

from tiny_gpt.bpe import BPETokenizer  # noqa: E402
from tiny_gpt.tokenizers import CharTokenizer, TikTokenizer  # noqa: E402

CHAR_DOCS = ["To be, or not to be: that is the question.\r\nWhether 'tis nobler…\n" * 6,
             "\ufeffcafé, naïve — 中文 and 🦜 parrots.\n\nTabs\there.  " * 5,
             "short, and no newline at its end"]


def _write_docs(folder: Path, texts: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"doc{i}.txt" for i in range(len(texts))]
    for p, t in zip(paths, texts): p.write_bytes(t.encode("utf-8"))
    return paths


def _doc_ids(folder: Path) -> list[dict[str, list[int]]]:
    "Each document's ids per split, sliced with the header's per-document counts."
    split_ids = {s: store_ids(folder, s) for s in ("train", "val")}
    header, out, at = open_store(folder).headers[0], [], {"train": 0, "val": 0}
    for source in header["sources"]:
        doc = {}
        for s, n in source["n_tokens"].items():
            doc[s], at[s] = split_ids[s][at[s]:at[s] + n], at[s] + n
        out.append(doc)
    return out


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_char_store_decodes_to_each_document(tmp_path, executor):
    "Pieces of ~64 bytes on 2 workers: every document's ids are its characters' ranks, and decode back to it."
    paths = _write_docs(tmp_path / "in", CHAR_DOCS)
    prepare_store(paths, tmp_path / "s", tokenizer="char", val_fraction=0.2, chunk_bytes=64, workers=2,
                  executor=executor, progress=False)
    texts = [t.removeprefix("\ufeff") for t in CHAR_DOCS]  # a byte-order mark is not text
    vocab = sorted(set("".join(texts)))                    # the reference: sorted characters of all documents
    store = open_store(tmp_path / "s")
    assert store.tokenizer_info == {"kind": "char", "chars": "".join(vocab)}
    assert (store.tokenizer_name, store.vocab_size, store.eot_token, store.dtype) == ("char", len(vocab), None, np.uint16)
    for text, ids in zip(texts, _doc_ids(tmp_path / "s")):
        assert ids["train"] + ids["val"] == [vocab.index(c) for c in text]
        assert store.tokenizer.decode(ids["train"]) + store.tokenizer.decode(ids["val"]) == text
        assert ids["val"]  # each document has a val tail


def test_char_shards_agree_on_the_vocabulary(tmp_path):
    "Shards 0/2 and 1/2 see different documents but build the same vocabulary: that of all of them."
    paths = _write_docs(tmp_path / "in", ["abc abc\n", "xyz xyz\n", "ÅÄÖ åäö\n"])
    for k in (0, 1): prepare_store(paths, tmp_path / "s", tokenizer="char", shard=(k, 2), progress=False)
    store = open_store(tmp_path / "s")
    infos = [h["tokenizer_info"] for h in store.headers]
    assert infos[0] == infos[1] == {"kind": "char", "chars": "".join(sorted(set("abc xyz ÅÄÖ åäö\n")))}
    expected = [c for t in ("abc abc\n", "ÅÄÖ åäö\n", "xyz xyz\n") for c in t]  # shard 0: docs 0, 2; shard 1: doc 1
    assert store.tokenizer.decode(np.concatenate(store.shards)) == "".join(expected)
    header_file = tmp_path / "s" / f"{shard_stem(1, 2)}.json"
    h = json.loads(header_file.read_text(encoding="utf-8"))
    header_file.write_text(json.dumps(h | {"tokenizer_info": {"kind": "char", "chars": "\n abcxyz"}}), encoding="utf-8")
    with pytest.raises(BadInput, match=r"disagree on tokenizer_info .*: char \(14 characters\).*: char \(8 characters\)"):
        open_store(tmp_path / "s")


@pytest.fixture(scope="module")
def saved_bpe(tmp_path_factory) -> Path:
    "A 320-token BPE with GPT-2's pre-tokenizer, trained on The Verdict and saved."
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    return BPETokenizer.train(text, vocab_size=320, progress=False).save(tmp_path_factory.mktemp("bpe") / "bpe.json")


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_bpe_path_store_equals_the_loaded_tokenizer(tmp_path, saved_bpe, executor):
    "Each document's ids are BPETokenizer.load(PATH).encode(document), closed by its <|endoftext|>; pieces of ~50 bytes."
    texts = [corpus_path("the-verdict.txt").read_text(encoding="utf-8")[:3000], CHAR_DOCS[0], "x" * 500 + " end"]
    paths = _write_docs(tmp_path / "in", texts)
    prepare_store(paths, tmp_path / "s", tokenizer=saved_bpe, val_fraction=0.1, chunk_bytes=50, workers=2,
                  executor=executor, progress=False)
    reference = BPETokenizer.load(saved_bpe)
    eot = reference.special_tokens["<|endoftext|>"]
    for text, ids in zip(texts, _doc_ids(tmp_path / "s")):
        assert ids["train"][-1] == ids["val"][-1] == eot
        assert ids["train"][:-1] + ids["val"][:-1] == reference.encode(text)
    store = open_store(tmp_path / "s", tokenizer=reference)
    assert (store.vocab_size, store.eot_token) == (320, eot)
    assert store.tokenizer.decode(store.shards[0][:40]) == texts[0][:len(store.tokenizer.decode(store.shards[0][:40]))]


def test_gpt2_saved_as_a_bpe_file_gives_tiktokens_ids(tmp_path):
    "GPT-2's merges in plain Python, saved and named by path: the same ids as tiktoken's gpt2."
    path = BPETokenizer.gpt2().save(tmp_path / "gpt2.json")
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    paths = _write_docs(tmp_path / "in", [text])
    prepare_store(paths, tmp_path / "s", tokenizer=path, chunk_bytes=4096, workers=2, executor="thread", progress=False)
    assert store_ids(tmp_path / "s") == encode(text) + [EOT]


def test_bpe_without_endoftext_lets_documents_abut(tmp_path):
    text = "one two three\n"
    bpe = BPETokenizer.train(text * 10, vocab_size=270, special_tokens=(), progress=False)
    paths = _write_docs(tmp_path / "in", [text, text.upper()])
    prepare_store(paths, tmp_path / "s", tokenizer=bpe.save(tmp_path / "bpe.json"), progress=False)
    store = open_store(tmp_path / "s")
    assert store.eot_token is None and "no end-of-text token" in store.headers[0]["layout"]
    assert store_ids(tmp_path / "s") == bpe.encode(text) + bpe.encode(text.upper())


def test_a_saved_char_tokenizer_is_a_fixed_vocabulary(tmp_path):
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz \n")
    paths = _write_docs(tmp_path / "in", ["hello world\n" * 30])
    prepare_store(paths, tmp_path / "s", tokenizer=tok.save(tmp_path / "chars.json"), progress=False)
    assert store_ids(tmp_path / "s") == tok.encode("hello world\n" * 30)
    assert open_store(tmp_path / "s").tokenizer_info == {"kind": "char", "chars": "".join(tok.chars)}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_character_outside_a_fixed_vocabulary_is_refused_and_nothing_is_left(tmp_path, workers):
    chars = CharTokenizer("abc ").save(tmp_path / "abc.json")
    paths = _write_docs(tmp_path / "in", ["abc " * 100 + "cab d " + "abc " * 100])
    with pytest.raises(BadInput, match=r"doc0.txt' holds 1 character\(s\) that the tokenizer's 4 lack: 'd'") as e:
        prepare_store(paths, tmp_path / "new" / "s", tokenizer=chars, chunk_bytes=64, workers=workers, progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "new").exists()


def test_tokenizer_files_that_cannot_be_used_are_refused_in_one_line(tmp_path):
    paths = _write_docs(tmp_path / "in", ["tea for two\n"])
    gpt4 = BPETokenizer.train("tea for two", vocab_size=260, pattern="gpt4", progress=False).save(tmp_path / "g4.json")
    (tmp_path / "junk.json").write_text('{"format": "something else"}', encoding="utf-8")
    (tmp_path / "damaged.json").write_text(json.dumps({**json.loads(gpt4.read_text(encoding="utf-8")), "tokens": ["a"]}),
                                           encoding="utf-8")
    for tokenizer, message in [(gpt4, "splits text with another pattern than GPT-2's pre-tokenizer"),
                               (tmp_path / "junk.json", "junk.json' is not a saved tokenizer"),
                               (paths[0], "doc0.txt' is not a saved tokenizer"),
                               (tmp_path / "damaged.json", "does not contain all 256 single bytes"),
                               (str(tmp_path / "nowhere.json"), "no tokenizer file at"),
                               ("cl100k_base", "does not use GPT-2's pre-tokenizer")]:
        with pytest.raises(BadInput, match=message) as e:
            prepare_store(paths, tmp_path / "s", tokenizer=tokenizer, progress=False)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_open_store_compares_a_whole_tokenizer(tmp_path):
    paths = _write_docs(tmp_path / "in", ["abc\n"])
    prepare_store(paths, tmp_path / "c", tokenizer="char", progress=False)
    prepare_store(paths, tmp_path / "g", progress=False)
    assert open_store(tmp_path / "c", tokenizer=CharTokenizer("cab\n")).n_tokens == 4
    assert open_store(tmp_path / "g", tokenizer=TikTokenizer("gpt2")).n_tokens == len(encode("abc\n")) + 1
    with pytest.raises(BadInput, match=r"tokenized with char \(4 characters\), but char \(3 characters\) is expected"):
        open_store(tmp_path / "c", tokenizer=CharTokenizer("abc"))
    with pytest.raises(BadInput, match="tokenized with tiktoken 'gpt2', but char"):
        open_store(tmp_path / "g", tokenizer={"kind": "char", "chars": "abc\n"})
    with pytest.raises(BadInput, match="tokenized with 'char', but 'gpt2' is expected"):
        open_store(tmp_path / "c", tokenizer="gpt2")


def test_a_version_1_store_is_still_read(tmp_path):
    "A store written by the previous version: its header names a tiktoken encoding and carries no tokenizer_info."
    ids = np.array(encode("An old store.") + [EOT], dtype="<u2")
    (tmp_path / "old").mkdir()
    ids.tofile(tmp_path / "old" / "shard-00000-of-00001.run1.train.bin")
    import hashlib
    header = {"format": "tiny_gpt.token_store", "version": 1, "tokenizer": "gpt2", "vocab_size": 50257,
              "eot_token": 50256, "dtype": "uint16", "byteorder": "little",
              "layout": "each document's ids, then <|endoftext|>; its val tail likewise in the val file",
              "n_tokens": len(ids), "val_fraction": 0.0, "run": 1, "sources": [],
              "splits": {"train": {"file": "shard-00000-of-00001.run1.train.bin", "n_tokens": len(ids),
                                   "n_documents": 1, "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}},
              "shard": {"index": 0, "count": 1, "rule": "document i (in input order) goes to shard i % count"},
              "created": "2026-01-01T00:00:00+00:00", "seconds": 0.1}
    (tmp_path / "old" / "shard-00000-of-00001.json").write_text(json.dumps(header), encoding="utf-8")
    store = open_store(tmp_path / "old", tokenizer=TikTokenizer("gpt2"))
    assert store.header["version"] == 1 and store.tokenizer_info == {"kind": "tiktoken", "name": "gpt2"}
    assert store.tokenizer.decode(store.shards[0][:-1].tolist()) == "An old store."


def test_a_store_pickles_without_its_tokenizer(tmp_path):
    paths = _write_docs(tmp_path / "in", ["abc\n" * 10])
    prepare_store(paths, tmp_path / "s", tokenizer="char", progress=False)
    store = open_store(tmp_path / "s")
    assert store.tokenizer.chars == ["\n", "a", "b", "c"]
    clone = pickle.loads(pickle.dumps(store))
    assert "_tokenizer" not in clone.__dict__ and clone.tokenizer.chars == store.tokenizer.chars


def test_char_and_bpe_with_spawned_workers(tmp_path, saved_bpe):
    "What Windows and macOS do: spawned worker processes receive the char or BPE tokenizer once, at start."
    code = ("import multiprocessing as mp, sys\n"
            "from tiny_gpt.store import prepare_store\n"
            "if __name__ == '__main__':\n"
            "    mp.set_start_method('spawn')\n"
            "    prepare_store(sys.argv[1], sys.argv[2], tokenizer=sys.argv[3], chunk_bytes=1 << 12, workers=2,\n"
            "                  progress=False)\n")
    (tmp_path / "run.py").write_text(code, encoding="utf-8")
    text = corpus_path("the-verdict.txt").read_text(encoding="utf-8")
    for tokenizer, expected in (("char", CharTokenizer(text).encode(text)),
                                (str(saved_bpe), BPETokenizer.load(saved_bpe).encode(text) + [319])):
        out = tmp_path / f"s-{len(expected)}"
        subprocess.run([sys.executable, str(tmp_path / "run.py"), str(corpus_path("the-verdict.txt")), str(out),
                        tokenizer], check=True, timeout=120)
        assert store_ids(out) == expected


def test_pieces_carry_a_short_key_not_the_vocabulary(tmp_path, monkeypatch, saved_bpe):
    "What is sent to a worker per piece stays a few hundred bytes, whatever the tokenizer's vocabulary."
    import tiny_gpt.store as store
    sent, encode_piece = [], store._encode_piece

    def recording(*args):
        sent.append(len(pickle.dumps(args)))
        return encode_piece(*args)

    monkeypatch.setattr(store, "_encode_piece", recording)
    paths = _write_docs(tmp_path / "in", [corpus_path("the-verdict.txt").read_text(encoding="utf-8")[:2000]])
    store.prepare_store(paths, tmp_path / "s", tokenizer=saved_bpe, chunk_bytes=100, workers=0, progress=False)
    assert len(sent) > 10 and max(sent) < 300
