"""Samplers for evaluation under DDP."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class ShardedEvalSampler(Sampler[int]):
    """Indices rank, rank + world, ...: every sample is seen exactly once over all ranks
    (no padding, unlike DistributedSampler), so summed counts give exact accuracy."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
