"""Data-parallel training: two gloo ranks on CPU reproduce single-process training on the same global batches.

Shards of one global batch hold different numbers of atoms (clusters of 3..8 atoms) and the last global
batch of each epoch has a single graph, so one rank gets an empty shard: the per-atom / per-element
normalisation by *global* counts makes the summed rank gradients equal the single-process gradient.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import PAIR, PairPotential, _env, _to_toml, base_config, make_data, read_log, train

from escn.checkpoint import load_checkpoint
from escn.data import collate
from escn.train import LossTerm
from escn.train.data import epoch_permutation, global_batches, rank_batches, shard
from escn.train.losses import LossFunction

TESTS = Path(__file__).resolve().parent


def test_shard_losses_sum_to_the_global_loss_and_gradient():
    """Per-rank losses normalised by global counts: their gradients add up to the full-batch gradient."""
    torch.manual_seed(0)
    model = PairPotential(hidden=6).double()
    graphs = [g.with_radius_graph(2.5) for g in make_data(5, seed=2)]
    loss_fn = LossFunction({"energy": LossTerm(1.0, per_atom=True), "forces": LossTerm(10.0, type="huber", delta=0.5)})

    def grads(batches):
        counts = sum(loss_fn.counts(b) for b in batches)
        model.zero_grad()
        total = 0.0
        for b in batches:
            loss, _ = loss_fn(model(b, compute_forces=True), b, counts)
            loss.backward()
            total += float(loss.detach())
        return total, [p.grad.clone() for p in model.parameters()]

    model.train()
    full_loss, full = grads([collate(graphs)])
    sizes = [[graphs[i].num_nodes for i in shard(range(5), r, 2)] for r in range(2)]
    assert sum(sizes[0]) != sum(sizes[1])  # the shards really hold different numbers of atoms
    shard_loss, parts = grads([collate([graphs[i] for i in shard(range(5), r, 2)]) for r in range(2)])
    assert shard_loss == pytest.approx(full_loss, rel=1e-13)
    for a, b in zip(full, parts):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_global_batch_order_is_world_size_independent():
    order = epoch_permutation(9, seed=3, epoch=1)
    assert order == epoch_permutation(9, seed=3, epoch=1) and order != epoch_permutation(9, seed=3, epoch=2)
    batches = global_batches(order, 4)
    assert [len(b) for b in batches] == [4, 4, 1]
    for b in batches:
        assert sorted(shard(b, 0, 2) + shard(b, 1, 2)) == sorted(b)
    assert shard(batches[-1], 1, 2) == []


@pytest.mark.parametrize("n, batch_size, world", [(9, 4, 2), (10, 4, 2), (7, 3, 2), (5, 1, 2), (11, 4, 3), (6, 2, 4)])
def test_distributed_sampler_shards_are_the_global_batches(n, batch_size, world):
    """rank_batches (a DistributedSampler without its padding) hands rank r the items of each global batch of the
    seeded epoch order whose position in the epoch is r modulo W (global_batch[r::W] when W divides the batch
    size), with empty shards where a global batch is smaller than the world; the ranks' shards make up the
    global batch."""
    data = list(range(n))
    for epoch, shuffle in ((0, True), (3, True), (0, False)):
        batches = global_batches(epoch_permutation(n, seed=5, epoch=epoch, shuffle=shuffle), batch_size)
        shards = [
            rank_batches(data, batch_size, rank, world, seed=5, epoch=epoch, shuffle=shuffle) for rank in range(world)
        ]
        for rank in range(world):
            assert shards[rank] == [
                [item for i, item in enumerate(b) if (k * batch_size + i) % world == rank]
                for k, b in enumerate(batches)
            ]
            if batch_size % world == 0:
                assert shards[rank] == [shard(b, rank, world) for b in batches]
        assert [sorted(sum((s[k] for s in shards), [])) for k in range(len(batches))] == [sorted(b) for b in batches]
    if (n, batch_size, world) in ((9, 4, 2), (5, 1, 2)):  # a one-item global batch leaves rank 1 without items
        assert rank_batches(data, batch_size, 1, world, seed=5)[-1] == []


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_gloo_ranks_match_single_process(tmp_path):
    over = dict(
        model={"name": PAIR, "hidden": 8},
        epochs=2,
        batch_size=4,
        checkpoint_every=3,
        data={
            "train": {"source": "test_train:make_data", "kwargs": {"n": 9, "seed": 0}},
            "valid": {"source": "test_train:make_data", "kwargs": {"n": 5, "seed": 1}},
        },
    )
    cfg = base_config(tmp_path / "ddp", **over)
    path = tmp_path / "ddp.toml"
    path.write_text(_to_toml(cfg))
    launcher = (
        [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m", "torch.distributed.run"]
    )
    env = _env(OMP_NUM_THREADS="1")
    run = subprocess.run(
        [*launcher, "--standalone", "--nproc_per_node=2", "-m", "escn", "train", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("training finished: 6 steps") == 1  # only rank 0 reports
    assert run.stdout.count("data parallel: 2 ranks (DistributedDataParallel, gloo)") == 1

    single = train(base_config(tmp_path / "single", **over))
    out = Path(cfg["output_dir"])
    ddp_ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ddp_ckpt["world_size"] == 2 and len(ddp_ckpt["rng"]) == 2
    ref = {k: v.detach() for k, v in single.model.state_dict().items()}
    for k, v in ddp_ckpt["model_state"].items():
        assert torch.allclose(v, ref[k], rtol=0, atol=1e-6), (k, (v - ref[k]).abs().max())
        assert (v - ref[k]).abs().max() < 1e-10  # in float64 the two agree far below the 1e-6 requirement
    ema_ref = load_checkpoint(single.checkpoint)["ema_state"]
    for k, v in ddp_ckpt["ema_state"].items():
        assert torch.allclose(v, ema_ref[k], rtol=0, atol=1e-6)
    log_ddp, log_single = read_log(out / "metrics.jsonl"), read_log(Path(single.checkpoint).parent / "metrics.jsonl")
    assert len(log_ddp) == len(log_single)  # one writer: no duplicated lines
    for a, b in zip(log_ddp, log_single):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a["step"], key)
