"""``ContiguousSampler``: the test sampler of the temporal BEV models.

BEVFormer carries the previous frame's BEV from one test sample to the next, so each process
must see consecutive frames. mmengine's ``DefaultSampler`` deals indices out round-robin
(with N processes, each one's "previous" frame would be N frames back); this one gives rank
r one contiguous block, as the published distributed test sampler did.

mmengine's evaluator gathers the per-rank results interleaved (rank 0's first, rank 1's
first, ...) and keeps the first ``len(dataset)``. So that what it drops is never a real
frame, every rank holds the same number of items: the first ranks ``ceil(n / world)`` real
frames each, the last ranks one fewer plus a repeat of their own last frame at the end,
exactly the positions the truncation removes. Metrics that need dataset order sort by the
``index`` they are given (the gathered order is not the dataset order)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

from mmdet.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info
from torch.utils.data import Sampler


def contiguous_blocks(size: int, world_size: int) -> list[list[int]]:
    """The indices each rank evaluates (see the module docstring)."""
    if size < 1:
        raise ValueError(f"ContiguousSampler: the dataset is empty (size {size})")
    per_rank = math.ceil(size / world_size)
    short = per_rank * world_size - size  # ranks with one real frame fewer (the last ones)
    blocks, start = [], 0
    for rank in range(world_size):
        length = per_rank - (rank >= world_size - short)
        block = list(range(start, start + length))
        start += length
        if len(block) < per_rank:  # repeat this rank's own last frame (or the dataset's)
            block.append(block[-1] if block else size - 1)
        blocks.append(block)
    return blocks


@DATA_SAMPLERS.register_module()
class ContiguousSampler(Sampler):
    """Rank r iterates its contiguous block of the dataset in order, once; single-process
    runs see every index in order (what ``DefaultSampler(shuffle=False)`` gives)."""

    def __init__(self, dataset: Sized, seed: int | None = None) -> None:
        del seed  # accepted like DefaultSampler's; the order is fixed
        self.rank, self.world_size = get_dist_info()
        self.blocks = contiguous_blocks(len(dataset), self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.blocks[self.rank])

    def __len__(self) -> int:
        return len(self.blocks[self.rank])

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle (the runner calls this on every sampler)."""
