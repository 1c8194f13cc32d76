"""``ContiguousSampler`` (bev_common/samplers.py): contiguous per-rank blocks of equal length
whose padding is exactly what mmengine's interleaved gather drops, so a multi-process test
run scores every frame once, each process seeing consecutive frames."""

from __future__ import annotations

import pytest
from mmengine.dist import collect_results

from autonomous_driving.bev_common.samplers import ContiguousSampler, contiguous_blocks


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 11, 16, 6019])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_blocks_are_contiguous_and_the_gather_keeps_every_frame_once(size: int, world: int) -> None:
    blocks = contiguous_blocks(size, world)
    assert len(blocks) == world and len({len(b) for b in blocks}) == 1  # equal lengths
    flat = [i for block in blocks for i in block]
    assert [i for k, i in enumerate(flat) if k == 0 or flat[k - 1] != i] == list(range(size))  # in order
    for block in blocks:
        assert block == sorted(block) and all(b - a in (0, 1) for a, b in zip(block, block[1:]))
    # what mmengine's collect_results_cpu does with the parts: interleave, keep `size`
    gathered = [i for column in zip(*blocks) for i in column][:size]
    assert sorted(gathered) == list(range(size))


def test_the_published_val_split_on_eight_processes() -> None:
    """6019 frames on 8 GPUs: 753 items per process; the last five carry 752 frames and one repeat."""
    blocks = contiguous_blocks(6019, 8)
    assert [len(b) for b in blocks] == [753] * 8
    assert [b[0] for b in blocks] == [0, 753, 1506, 2259, 3011, 3763, 4515, 5267]
    assert blocks[-1][-2:] == [6018, 6018]


def test_single_process_is_dataset_order() -> None:
    sampler = ContiguousSampler(list(range(5)))
    assert list(sampler) == [0, 1, 2, 3, 4] and len(sampler) == 5
    assert collect_results([0, 1, 2, 3, 4], 5) == [0, 1, 2, 3, 4]


def test_empty_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="dataset is empty"):
        contiguous_blocks(0, 2)
