"""The BEV neck (published keys, shapes, zero-init residual) and the detector's top-35
selection (driving_hdmap_params.md §2, §4.7)."""

from __future__ import annotations

import pytest
import torch

from autonomous_driving.online_hdmap.heads_common import build_bev_neck, detector_post_process


def test_bev_neck_keys_and_shapes() -> None:
    neck = build_bev_neck(128)
    sd = neck.state_dict()
    assert tuple(sd["0.weight"].shape) == (64, 128, 7, 7) and tuple(sd["5.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["4.0.conv1.weight"].shape) == (64, 64, 3, 3) and "4.1.bn2.num_batches_tracked" in sd
    assert not any(k.startswith("4.0.downsample") for k in sd)
    assert (sd["4.0.bn2.weight"] == 0).all() and (sd["4.1.bn2.weight"] == 0).all()
    small = build_bev_neck(16).eval()
    assert small(torch.randn(1, 16, 100, 200)).shape == (1, 16, 25, 50)


def test_detector_post_process() -> None:
    # 2 samples, 3 queries, 3 classes; logits chosen so the order is known.
    scores = torch.full((2, 3, 3), -10.0)
    scores[0, 2, 1] = 3.0  # best of sample 0: query 2, label 1
    scores[0, 0, 2] = 2.0
    scores[0, 2, 0] = 1.0  # the same query again, another label
    scores[1, 1, 0] = 0.5
    lines = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4) + 0.4
    out = detector_post_process(lines, scores, max_lines=3)
    assert out["lines_bs_idx"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out["labels"].tolist()[:3] == [1, 2, 0] and out["labels"].tolist()[3] == 0
    torch.testing.assert_close(out["scores"][:3], torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))
    assert out["bbox_flat"].dtype == torch.int32
    assert out["bbox_flat"][0].tolist() == [8, 9, 10, 11]  # round(query 2's box 8.4 ...)
    assert out["bbox_flat"][1].tolist() == [0, 1, 2, 3] and out["bbox_flat"][3].tolist() == [16, 17, 18, 19]
    with pytest.raises(ValueError, match="exceeds"):
        detector_post_process(lines, scores, max_lines=10)
