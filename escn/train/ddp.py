"""Distributed data parallel helpers (``torchrun`` environment, gloo on CPU, nccl on CUDA).

The model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel` (:func:`data_parallel`), which
broadcasts rank 0's weights when it is built and all-reduces the gradients during ``backward``.  Its
communication hook sums the gradients instead of averaging them: the per-rank losses are already normalised
by global element counts (see :mod:`escn.train.losses`), so the sum is the gradient of the global batch's loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistInfo",
    "init_distributed",
    "all_reduce_sum",
    "data_parallel",
    "sum_gradients_hook",
    "all_gather_objects",
    "barrier",
    "shutdown",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (1 process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group described by ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (set by torchrun).

    Without those variables (or with ``WORLD_SIZE=1``) this is a single process and nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def all_reduce_sum(t: Tensor, info: DistInfo) -> Tensor:
    """In-place sum over ranks (no-op for one process); returns ``t``."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_gradients_hook(state, bucket):  # type: ignore[no-untyped-def]
    """DistributedDataParallel communication hook: the sum of a gradient bucket (a ``dist.GradBucket``) over
    ranks, without the division by the world size; returns a ``torch.futures.Future`` of the summed tensor.

    (No annotations: DDP checks them at run time, and this module's postponed annotations are strings.)"""
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def data_parallel(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel with summed gradients (``model`` itself for one process).

    Building the wrapper copies rank 0's parameters and buffers to every rank.  ``find_unused_parameters``
    is on: a parameter without a gradient on some rank counts as a zero there, and one without a gradient
    on every rank keeps ``grad = None`` (so the optimizer skips it, as it would in one process).
    """
    if not info.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    wrapped.register_comm_hook(None, sum_gradients_hook)
    return wrapped


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for one process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo, synchronize: bool = True) -> None:
    """Leave the process group (if this module's caller joined one).

    With ``synchronize`` (the normal end of a run; pass False after an error, so that the failing rank exits
    and the launcher stops the others instead of this rank waiting for peers that never arrive), all ranks
    meet at a barrier first: with gloo, a rank that tears its group down while a peer is still
    finishing (rank 0 writes the last checkpoint and summary) could abort the peer ("terminate called without
    an active exception", seen in about 1 of 5 two-rank runs on a loaded 2-core machine)."""
    if info.distributed and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
