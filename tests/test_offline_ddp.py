"""Data-parallel training (offline/ddp.py): two CPU processes with the gloo backend compute the
same gradients as one process that sees both halves of the batch, and the shared training loop
runs unchanged under torch.distributed (both ranks end with identical weights)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from squeeze_perception.offline import ddp
from squeeze_perception.offline.common import segmentation_loss, train_segmenter
from squeeze_perception.offline.data import load_samples
from squeeze_perception.segmentation.searched_net import TINY_MACRO, SearchedSegNet

CHOICES = ["k3_e3", "k3_e1_g2", "k5_e1", "k3_e6", "skip"]


def _model() -> SearchedSegNet:
    torch.manual_seed(0)
    return SearchedSegNet(CHOICES, TINY_MACRO)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        samples = load_samples("", 4, 8, 32, seed=3)
        model = _model()
        net = ddp.wrap(model)
        x, y = ddp.shard(samples.inputs, samples.labels)
        segmentation_loss(net(x), x, y).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        train_segmenter(model, samples, epochs=1, batch_size=4, show_progress=False)
        torch.save({"grads": grads, "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                    "rank": ddp.world()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_agree_with_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["rank"] == (0, 2) and r1["rank"] == (1, 2)

    # One process, the same two half-batches (each with its own batch-norm statistics, as on the
    # two ranks), gradients averaged: what DDP's all-reduce computes.
    torch.set_num_threads(1)
    samples = load_samples("", 4, 8, 32, seed=3)
    model = _model()
    for half in (slice(0, 2), slice(2, 4)):
        x, y = samples.inputs[half], samples.labels[half]
        (segmentation_loss(model(x), x, y) / 2).backward()
    reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(reference) == set(r0["grads"]) == set(r1["grads"])
    for name, grad in reference.items():
        torch.testing.assert_close(r0["grads"][name], grad, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(r1["grads"][name], grad, atol=1e-6, rtol=1e-4)
    # The gradients are not trivially equal to either half alone.
    assert any(not torch.allclose(r0["grads"][n], 2 * g) for n, g in reference.items())
    # train_segmenter ran under DDP: both ranks hold the same weights afterwards.
    for name, p in r0["params"].items():
        torch.testing.assert_close(p, r1["params"][name])


def test_shard_splits_a_global_batch_by_rank(monkeypatch):
    batch = torch.arange(5)
    monkeypatch.setattr(ddp, "world", lambda: (1, 2))
    assert ddp.shard(batch)[0].tolist() == [3, 4]
    monkeypatch.setattr(ddp, "world", lambda: (0, 2))
    assert ddp.shard(batch)[0].tolist() == [0, 1, 2]
    monkeypatch.setattr(ddp, "world", lambda: (0, 1))
    assert ddp.shard(batch)[0].tolist() == [0, 1, 2, 3, 4]
