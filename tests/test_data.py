"""tiny_gpt.data: properties against the book's reference loop, shards, pickling and spawned workers, bad inputs."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tiny_gpt.bpe import BPETokenizer
from tiny_gpt.data import (NextTokenDataset, TokenStoreDataset, WindowBatchSampler, check_positive_ints,
                           count_windows, shuffle_positions, tiny_data_loader)
from tiny_gpt.io import io_load_text_file


def book_windows(ids, max_length, stride):
    "The reference design (Raschka, ch. 2): one (input, target) pair per start in range(0, n - max_length, stride)."
    return [(ids[i:i + max_length], ids[i + 1:i + max_length + 1]) for i in range(0, len(ids) - max_length, stride)]


def rows(loader):
    return [(x.tolist(), y.tolist()) for inputs, targets in loader for x, y in zip(inputs, targets)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 80), max_length=st.integers(1, 10), stride=st.integers(1, 12), batch_size=st.integers(1, 5))
def test_windows_match_the_book(n, max_length, stride, batch_size):
    ids = torch.randint(0, 50257, (n,))
    expected = book_windows(ids.tolist(), max_length, stride)
    assert count_windows(n, max_length, stride) == len(expected)
    if not expected:
        with pytest.raises(ValueError, match="needs at least"): tiny_data_loader(ids, batch_size, max_length, stride)
        return
    loader = tiny_data_loader(ids, batch_size, max_length, stride, shuffle=False, drop_last=False)
    assert rows(loader) == expected
    if len(expected) < batch_size:
        with pytest.raises(ValueError, match="batch_size"): tiny_data_loader(ids, batch_size, max_length, stride)
    else:
        loader = tiny_data_loader(ids, batch_size, max_length, stride, shuffle=True, seed=1)
        got = rows(loader)
        assert len(got) == len(expected) // batch_size * batch_size
        assert all(w in expected for w in got)
        assert all(inputs.dtype == torch.int64 and inputs.shape == (batch_size, max_length) for inputs, _ in loader)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5), max_length=st.integers(1, 6), stride=st.integers(1, 5))
def test_shards_equal_separate_texts(lengths, max_length, stride):
    shards = [np.random.randint(0, 65535, n).astype(np.uint16) for n in lengths]
    ds = TokenStoreDataset(shards, max_length, stride)
    expected = [w for s in shards for w in book_windows(s.astype(np.int64).tolist(), max_length, stride)]
    assert len(ds) == len(expected)
    if expected:
        order = np.random.permutation(len(ds))
        batch = ds.__getitems__(order)
        assert [(x.tolist(), y.tolist()) for x, y in zip(batch.inputs, batch.targets)] == [expected[i] for i in order]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 1000))
def test_shuffle_is_a_permutation(n, seed, epoch):
    p = shuffle_positions(np.arange(n), n, seed, epoch)
    assert p.dtype == np.int64 and np.array_equal(np.sort(p), np.arange(n))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_split_the_epoch(world_size, drop_last):
    n = 103
    shares = [[i for b in WindowBatchSampler(n, 5, True, drop_last, 7, r, world_size) for i in b.tolist()] for r in range(world_size)]
    lengths = {len(s) for s in shares}
    assert len(lengths) == 1                                            # every rank runs the same number of windows
    union = sum(shares, [])
    if drop_last: assert len(set(union)) == len(union)                  # disjoint
    else: assert set(union) == set(range(n))                            # covering (padding repeats a few)


def test_set_epoch_and_seed():
    s = WindowBatchSampler(50, 4, seed=3)
    s.set_epoch(0); e0 = s.epoch_order().tolist()
    s.set_epoch(1); e1 = s.epoch_order().tolist()
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(50))
    torch.manual_seed(0); a = WindowBatchSampler(50, 4).epoch_order()
    torch.manual_seed(0); b = WindowBatchSampler(50, 4).epoch_order()
    assert torch.equal(a, b)                                            # seed=None follows torch.manual_seed


@pytest.fixture
def memmap_shards(tmp_path):
    ids = np.arange(3000, dtype=np.uint16) * 7 % 50000
    ids[:1800].tofile(tmp_path / "a.bin"); ids[1800:].tofile(tmp_path / "b.bin")
    return ids, [np.memmap(tmp_path / f, dtype=np.uint16, mode="r") for f in ("a.bin", "b.bin")]


def test_memmap_dataset_pickles_by_reference(memmap_shards):
    ids, shards = memmap_shards
    ds = TokenStoreDataset([shards[0], shards[1][100:]], max_length=16, stride=5)  # a slice of a memmap too
    blob = pickle.dumps(ds)
    assert len(blob) < 2000
    again = pickle.loads(blob)
    assert isinstance(again.shards[1], np.memmap)
    idx = np.arange(len(ds))
    assert torch.equal(again.__getitems__(idx).inputs, ds.__getitems__(idx).inputs)
    tail = pickle.loads(pickle.dumps(TokenStoreDataset([shards[1][100:]], max_length=16, stride=1)))
    assert torch.equal(tail[len(tail) - 1][1], torch.from_numpy(ids[-16:].astype(np.int64)))  # the slice's offset survives


class FakeStore:
    "What tiny_data_loader uses of a TokenStore."
    def __init__(self, shards, path="fake"): self.shards, self.path, self.tokenizer_name = shards, path, "gpt2"


@pytest.mark.parametrize("source", ["text", "store"])
def test_spawned_workers(source, memmap_shards):
    ids, shards = memmap_shards
    data = "".join(f"word{i} " for i in range(800)) if source == "text" else FakeStore(shards)
    kw = dict(batch_size=8, max_length=32, stride=20, seed=5)
    spawned = tiny_data_loader(data, num_workers=2, multiprocessing_context="spawn", **kw)
    spawned.batch_sampler.set_epoch(2)
    local = tiny_data_loader(data, **kw); local.batch_sampler.set_epoch(2)
    assert rows(spawned) == rows(local) and len(rows(local)) > 0


def test_random_sampling_draws_real_windows(memmap_shards):
    ids, shards = memmap_shards
    loader = tiny_data_loader(FakeStore(shards), batch_size=16, max_length=8, stride=8, sampling="random", seed=0)
    assert len(loader) == (count_windows(1800, 8, 8) + count_windows(1200, 8, 8)) // 16
    text = [ids[:1800].tolist(), ids[1800:].tolist()]
    for x, y in rows(loader)[:64]:
        assert any(any(s[i:i + 9] == x + y[-1:] for i in range(len(s) - 8)) for s in text)
    a = rows(tiny_data_loader(FakeStore(shards), batch_size=4, max_length=8, sampling="random", seed=1, num_batches=3))
    b = rows(tiny_data_loader(FakeStore(shards), batch_size=4, max_length=8, sampling="random", seed=1, num_batches=3))
    assert a == b and len(a) == 12


TEXT = "one two three four five six seven eight nine ten " * 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=0), "stride must be an integer >= 1, got 0"),
    (dict(stride=-3), "stride must be an integer >= 1"),
    (dict(stride=2.0), "stride must be an integer >= 1"),
    (dict(max_length=0), "max_length must be an integer >= 1"),
    (dict(max_length=True), "max_length must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size="4"), "batch_size must be an integer >= 1"),
    (dict(num_workers=-1), "num_workers must be an integer >= 0"),
    (dict(max_length=500), "needs at least 501"),
    (dict(max_length=100, stride=100, batch_size=4), "fewer than batch_size=4"),
    (dict(sampling="nanogpt"), "sampling must be 'windows' or 'random'"),
    (dict(rank=2, world_size=2), "rank must be in [0, 2)"),
    (dict(world_size=0), "world_size must be an integer >= 1"),
    (dict(max_length=16, stride=16, batch_size=4, world_size=8), "per rank (8 ranks)"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        tiny_data_loader(TEXT, **{"max_length": 8, "stride": 8, **kwargs})


def test_bad_sources(tmp_path):
    with pytest.raises(TypeError, match="source must be text"): tiny_data_loader(["a list", "of texts"])
    with pytest.raises(TypeError, match="source must be text"): tiny_data_loader(42)
    with pytest.raises(ValueError, match="pass pathlib.Path"): tiny_data_loader(str(tmp_path))
    with pytest.raises(ValueError, match="shard 0 must be a 1-D integer array"):
        tiny_data_loader(FakeStore([np.zeros(100, np.float32)]), max_length=4)


def test_store_folder_goes_through_open_store(memmap_shards, tmp_path, monkeypatch):
    "A pathlib.Path is opened with tiny_gpt.store.open_store(path, split=...) (recorded here, then faked)."
    import tiny_gpt.data
    ids, shards = memmap_shards
    calls = []
    def open_store(path, split="train"): calls.append((path, split)); return FakeStore(shards, path)
    monkeypatch.setattr(tiny_gpt.data, "open_store", open_store)
    loader = tiny_data_loader(tmp_path, batch_size=2, max_length=4, stride=4, shuffle=False, split="val")
    assert calls == [(tmp_path, "val")]
    assert next(iter(loader))[0].tolist() == [ids[0:4].tolist(), ids[4:8].tolist()]
    with pytest.raises(ValueError, match=str(tmp_path)): tiny_data_loader(tmp_path, max_length=5000)


def test_huge_epochs_cost_nothing():
    import time
    t0 = time.perf_counter()
    s = WindowBatchSampler(10**12, 64, shuffle=True, seed=0, rank=1, world_size=8)   # 10^12 windows, 8 ranks
    first = next(iter(s))
    assert time.perf_counter() - t0 < 1.0
    assert len(set(first.tolist())) == 64 and first.max() < 10**12 and first.dtype == np.int64


def test_loader_paths_agree():
    "The in-process fast path of WindowLoader gives what PyTorch's own iterator gives."
    from torch.utils.data import DataLoader
    loader = tiny_data_loader(TEXT, batch_size=3, max_length=5, stride=2, seed=4)
    loader.set_epoch(3)
    plain = DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn)
    assert rows(loader) == rows(plain)


def test_random_sampling_ranks_draw_different_streams():
    ids = torch.arange(5000)
    draws = [rows(tiny_data_loader(ids, 4, 8, 8, sampling="random", seed=3, num_batches=5, rank=r, world_size=2)) for r in (0, 1)]
    assert draws[0] != draws[1] and all(len(d) == 20 for d in draws)


def test_strided_memmap_slice_pickles_by_value(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "s.bin")
    every_other = np.memmap(tmp_path / "s.bin", dtype=np.uint16, mode="r")[::2]   # not contiguous: cannot be re-mapped
    ds = pickle.loads(pickle.dumps(TokenStoreDataset([every_other], 4, 1)))
    assert ds[0][0].tolist() == [0, 2, 4, 6]


def test_bpe_tokenizer_gives_the_embeddings_batch():
    text = io_load_text_file(verbose=False)
    x, _ = next(iter(tiny_data_loader(text, batch_size=8, max_length=4, stride=3, shuffle=False,
                                      tokenizer=BPETokenizer.gpt2({"<|endoftext|>"}))))
    assert x.tolist() == [[40, 367, 2885, 1464], [1464, 1807, 3619, 402], [402, 271, 10899, 2138], [2138, 257, 7026, 15632],
                          [15632, 438, 2016, 257], [257, 922, 5891, 1576], [1576, 438, 568, 340], [340, 373, 645, 1049]]


# ---------------------------------------------------------------- arguments DataLoader would get, or that were ignored
def test_collate_fn_is_passed_through():
    "A collate_fn of one's own receives the (input, target) windows of each batch, like a DataLoader's."
    from torch.utils.data import default_collate
    seen = []
    def named(windows):
        seen.append(len(windows))
        inputs, targets = default_collate(list(windows))
        return {"input_ids": inputs, "labels": targets}
    kw = dict(batch_size=3, max_length=5, stride=2, shuffle=False)
    got = list(tiny_data_loader(TEXT, collate_fn=named, **kw))
    ref = list(tiny_data_loader(TEXT, **kw))
    assert len(got) == len(ref) > 0 and set(seen) == {3}
    for g, (x, y) in zip(got, ref):
        assert torch.equal(g["input_ids"], x) and torch.equal(g["labels"], y)


@pytest.mark.parametrize("kwargs, message", [
    (dict(shuffle=False, sampling="random"), "shuffle=False has no effect with sampling='random'"),
    (dict(num_batches=5), "num_batches=5 only applies to sampling='random'"),
    (dict(num_batches=5, sampling="windows"), "drop num_batches or set sampling='random'"),
])
def test_ignored_combinations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        tiny_data_loader(TEXT, max_length=8, stride=8, **kwargs)
    assert "\n" not in str(e.value)                                     # one line


@pytest.mark.parametrize("name", ["sampler", "batch_sampler", "dataset"])
def test_arguments_the_loader_builds_are_refused_clearly(name):
    with pytest.raises(TypeError, match=f"builds the DataLoader's {name} itself"):
        tiny_data_loader(TEXT, max_length=8, stride=8, **{name: [0]})


def test_check_positive_ints():
    check_positive_ints(a=1, b=np.int64(7))
    for bad in (0, -1, 1.0, True, "2", None):
        with pytest.raises(ValueError, match=f"x must be an integer >= 1, got {bad!r}"): check_positive_ints(x=bad)


# ---------------------------------------------------------------- memory-mapped ids stay on disk
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.fixture
def big_memmap(tmp_path):
    "20 M uint16 token ids (40 MB) in a file; as int64 in RAM they would take 160 MB."
    path = tmp_path / "ids.bin"
    with open(path, "wb") as f:
        for start in range(0, 20_000_000, 2_000_000):
            (np.arange(start, start + 2_000_000, dtype=np.int64) % 50257).astype(np.uint16).tofile(f)
    return np.memmap(path, dtype=np.uint16, mode="r")


def test_memmap_ids_are_not_copied(big_memmap):
    ds = NextTokenDataset(big_memmap, max_length=256, stride=128)
    assert isinstance(ds.tokens, np.memmap) and ds.tokens.dtype == np.uint16    # no int64 copy held
    loader = tiny_data_loader(big_memmap, batch_size=8, max_length=256, stride=128, seed=0)
    assert isinstance(loader.dataset.tokens, np.memmap)
    x, y = next(iter(loader))
    assert x.dtype == torch.int64 and x.shape == (8, 256)
    assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="resident memory is read from Linux's /proc")
def test_memmap_ids_cost_no_resident_memory(big_memmap):
    before = _rss_mb()
    ds = NextTokenDataset(big_memmap, max_length=256, stride=128)
    batch = ds.__getitems__(np.arange(0, len(ds), len(ds) // 64)[:64])
    grown = _rss_mb() - before
    assert grown < 40, f"resident memory grew by {grown:.0f} MB; an int64 copy of the ids takes 160 MB"
    assert batch.inputs.shape == (64, 256)


def test_memmap_windows_equal_the_in_ram_ones(big_memmap):
    head = big_memmap[:50_000]                                      # still a memmap
    on_disk, in_ram = NextTokenDataset(head, 16, 5), NextTokenDataset(np.asarray(head).astype(np.int64), 16, 5)
    assert isinstance(on_disk.tokens, np.memmap) and isinstance(in_ram.tokens, torch.Tensor)
    idx = np.random.default_rng(0).permutation(len(in_ram))
    a, b = on_disk.__getitems__(idx), in_ram.__getitems__(idx)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for i in (0, 1, len(in_ram) - 1):
        assert [t.tolist() for t in on_disk[i]] == [t.tolist() for t in in_ram[i]]
    again = pickle.loads(blob := pickle.dumps(on_disk))              # a spawned worker re-maps the file
    assert len(blob) < 2000 and isinstance(again.tokens, np.memmap)
    assert torch.equal(again.__getitems__(idx[:100]).inputs, a.inputs[:100])


def test_a_store_refuses_a_tokenizer_of_the_same_name_with_another_vocabulary(tmp_path):
    "Two character vocabularies are both called 'char': the loader compares the vocabularies, not the names."
    from tiny_gpt.store import prepare_store
    from tiny_gpt.tokenizers import CharTokenizer
    (tmp_path / "a.txt").write_text("abcab " * 200, encoding="utf-8")
    store = prepare_store(tmp_path / "a.txt", tmp_path / "store", tokenizer="char", workers=0, progress=False)
    kw = dict(batch_size=2, max_length=4, stride=4)
    with pytest.raises(ValueError, match="was tokenized with"):
        tiny_data_loader(store, tokenizer=CharTokenizer("abcd "), **kw)
    inputs, _ = next(iter(tiny_data_loader(store, tokenizer=CharTokenizer("abc "), shuffle=False, **kw)))
    assert CharTokenizer("abc ").decode(inputs[0]) == "abca"
