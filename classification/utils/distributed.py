"""Process-group helpers: one code path for a plain process and for torchrun."""

from __future__ import annotations

import atexit
import functools
import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int, int, bool]:
    """Joins the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU).
    Returns (rank, world_size, local_rank, initialised_here)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return 0, 1, local_rank, False
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, False
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo", init_method="env://", world_size=world_size, rank=rank
    )
    return rank, world_size, local_rank, True


@functools.cache  # registers once per process
def leave_process_group_at_exit() -> None:
    """Destroys the default process group when the interpreter exits, while it is still whole.

    A process that exits with a gloo group alive can abort ("terminate called without an active
    exception", SIGABRT): gloo's worker threads still hold finished work whose tensors are
    released during interpreter finalization. Entry points that join a group and leave it to
    exit (mmengine's Runner never destroys one) register this once; it is a no-op when the
    group is already gone."""
    atexit.register(_destroy_if_initialized)


def _destroy_if_initialized() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums a few numbers over all ranks (identity in a single process)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
