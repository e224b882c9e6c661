"""Distributed data parallel (torch.distributed) for the offline training loops.

The loops call these helpers and run unchanged in one process or under
`torchrun --nproc_per_node N -m squeeze_perception.cli offline ...`: every rank draws the same
global mini-batch order (same seed) and takes its own slice of each batch, DDP averages the
gradients, and only rank 0 writes files or prints. CPU runs use the gloo backend.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(backend: str = "") -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return True


def wrap(model: nn.Module) -> nn.Module:
    """The model itself in one process, DDP around it in a process group. Unused parameters are
    allowed: a super net's skip edges and architecture logits need not all get gradients."""
    if world()[1] == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous slice of a global batch (ranks beyond the batch get one sample, so
    every rank joins the gradient all-reduce)."""
    rank, size = world()
    if size == 1:
        return tensors
    n = tensors[0].shape[0]
    per = -(-n // size)
    lo = min(rank * per, n - 1)
    hi = max(min(lo + per, n), lo + 1)
    return tuple(t[lo:hi] for t in tensors)
