"""torch.distributed helpers: set-up from torchrun's environment, rank queries, and the
collectives the trainer needs (the sample order is in ``yolact_lite.data.sampling``).

Launch with ``torchrun --nproc_per_node=N scripts/train.py ...``; torchrun sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.  Without them everything
here degrades to a single process (rank 0 of 1) and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "init_distributed", "cleanup", "is_distributed", "get_rank", "get_world_size",
    "is_main_process", "barrier", "broadcast_object", "all_reduce_mean", "all_reduce_min",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None  # None: no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_distributed(device: str = "cpu", timeout_minutes: float = 120.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Backend: ``nccl`` when ``device`` is CUDA, else ``gloo``.  With CUDA each process uses
    ``cuda:LOCAL_RANK``.  Returns a single-process :class:`DistInfo` when ``WORLD_SIZE`` is
    unset or 1.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistInfo(0, 1, local_rank, None)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    use_cuda = str(device).startswith("cuda")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world, local_rank, backend)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (identity without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a new tensor; identity without a process group).  A non-finite value
    on any rank makes the result non-finite everywhere, which the non-finite guard relies on."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out
