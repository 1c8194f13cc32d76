"""Two small fixed pieces of VectorMapNet around the heads (driving_hdmap_params.md §2,
§4.7): the BEV neck built when ``neck_cfg=None`` and the detector's inference selection."""

from __future__ import annotations

import torch
from torch import nn


def build_bev_neck(channels: int = 128) -> nn.Sequential:
    """``neck.*``: Conv7x7/2 (no bias) -> BN -> ReLU -> MaxPool3/2 -> torchvision ResNet-18
    ``layer1`` (``zero_init_residual``: each block's ``bn2.weight`` starts at 0) -> Conv1x1
    (no bias); (B, C, 100, 200) -> (B, C, 25, 50). The middle width is ResNet-18's 64."""
    from torchvision.models import resnet18

    layer1 = resnet18(weights=None, zero_init_residual=True).layer1
    return nn.Sequential(
        nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        layer1,
        nn.Conv2d(64, channels, kernel_size=1, bias=False),
    )


def detector_post_process(
    lines: torch.Tensor, scores: torch.Tensor, max_lines: int = 35
) -> dict[str, torch.Tensor]:
    """``MapElementDetector.post_process`` on the last layer: per sample, the top
    ``max_lines`` of the flattened sigmoid scores ``(queries * classes)``; ``label = idx %
    classes``, ``query = idx // classes`` (a query may appear with several labels);
    ``bbox_flat = round(lines[query])`` as int32. No score threshold (``score_thre`` is
    never applied, as published). Outputs are concatenated over the batch."""
    if lines.ndim != 3 or scores.ndim != 3 or lines.shape[:2] != scores.shape[:2] or lines.shape[-1] != 4:
        raise ValueError(
            "lines (B, Q, 4) and scores (B, Q, classes) expected, got "
            f"{tuple(lines.shape)}, {tuple(scores.shape)}"
        )
    b, q, num_classes = scores.shape
    if max_lines > q * num_classes:
        raise ValueError(f"max_lines ({max_lines}) exceeds queries x classes ({q * num_classes})")
    probs, idx = scores.sigmoid().flatten(1).topk(max_lines, dim=1)
    labels = idx % num_classes
    query = idx // num_classes
    bbox = torch.gather(lines, 1, query[..., None].expand(-1, -1, 4))
    return {
        "lines_bs_idx": torch.arange(b, device=lines.device).repeat_interleave(max_lines),
        "lines_cls": labels.reshape(-1),
        "labels": labels.reshape(-1),
        "scores": probs.reshape(-1),
        "bbox_flat": bbox.round().to(torch.int32).reshape(-1, 4),
    }
