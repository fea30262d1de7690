"""tiny_data_loader under real DDP: `torchrun --nproc_per_node=2`, gloo backend, CPU."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

N_TOKENS, MAX_LENGTH, STRIDE, BATCH = 1000, 8, 3, 4

# Each rank loads token ids 0, 1, 2, ... so the first input token of a window *is* its start index.
RANK_SCRIPT = textwrap.dedent(f"""
    import json, os, sys
    import torch, torch.distributed as dist
    from tiny_gpt.data import tiny_data_loader
    dist.init_process_group("gloo")
    out = {{"rank": dist.get_rank(), "world_size": dist.get_world_size()}}
    for drop_last in (True, False):
        loader = tiny_data_loader(torch.arange({N_TOKENS}), batch_size={BATCH}, max_length={MAX_LENGTH},
                                  stride={STRIDE}, drop_last=drop_last)
        epochs = []
        for epoch in (0, 1):
            loader.batch_sampler.set_epoch(epoch)
            epochs.append([int(s) for inputs, _ in loader for s in inputs[:, 0]])
        out[f"drop_last={{drop_last}}"] = dict(epochs=epochs, n_windows=len(loader.dataset), n_batches=len(loader))
    n = torch.tensor([len(out["drop_last=True"]["epochs"][0])])
    dist.all_reduce(n)  # the ranks can talk: the process group is real
    out["total"] = int(n)
    with open(os.path.join(sys.argv[1], f"rank{{dist.get_rank()}}.json"), "w", encoding="utf-8") as f: json.dump(out, f)
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads((tmp / f"rank{i}.json").read_text(encoding="utf-8")) for i in range(2)]


def test_two_ranks_ran(ranks):
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)


def test_drop_last_ranks_are_disjoint_and_cover_the_epoch(ranks):
    from tiny_gpt.data import WindowBatchSampler
    n_windows = ranks[0]["drop_last=True"]["n_windows"]
    starts = list(range(0, N_TOKENS - MAX_LENGTH, STRIDE))
    assert n_windows == len(starts) == 331
    per_rank = n_windows // 2 // BATCH * BATCH                  # each rank: n // world_size windows, whole batches
    assert per_rank == 164
    for epoch in (0, 1):
        shares = [r["drop_last=True"]["epochs"][epoch] for r in ranks]
        assert [len(s) for s in shares] == [per_rank, per_rank]
        assert not set(shares[0]) & set(shares[1])                       # disjoint
        # cover: the two shares together are the epoch's order (seed 0 under DDP, as one process computes it)
        # without only its last n - 2 * per_rank windows, rank r holding positions r, r + 2, r + 4, ...
        one = WindowBatchSampler(n_windows, BATCH, shuffle=True, seed=0, rank=0, world_size=1)
        one.set_epoch(epoch)
        order = [starts[i] for i in one.epoch_order().tolist()]
        assert sorted(order) == starts                                   # the order is the whole epoch
        assert shares[0] == order[0 : 2 * per_rank : 2] and shares[1] == order[1 : 2 * per_rank : 2]
        missing = set(starts) - set(shares[0]) - set(shares[1])
        assert missing == set(order[2 * per_rank:]) and len(missing) == n_windows - 2 * per_rank == 3
    assert ranks[0]["total"] == 2 * per_rank


def test_padded_ranks_cover_every_window(ranks):
    n_windows = ranks[0]["drop_last=False"]["n_windows"]
    starts = set(range(0, N_TOKENS - MAX_LENGTH, STRIDE))
    for epoch in (0, 1):
        shares = [r["drop_last=False"]["epochs"][epoch] for r in ranks]
        assert len(shares[0]) == len(shares[1]) == -(-n_windows // 2)    # ceil(n / world_size) each
        assert set(shares[0]) | set(shares[1]) == starts                 # the whole epoch
        assert len(set(shares[0]) & set(shares[1])) == 2 * len(shares[0]) - n_windows  # only the padding repeats


def test_set_epoch_reshuffles(ranks):
    for r in ranks:
        e0, e1 = r["drop_last=True"]["epochs"]
        assert e0 != e1
