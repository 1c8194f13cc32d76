"""Segmentors as plain ``tensor -> logits`` modules, for FLOP counting and timing: the
inference path (backbone, neck, decode head, resize to the input) without data samples."""

from __future__ import annotations

import torch
from mmengine.config import Config
from torch import nn


class SegmentorLogits(nn.Module):
    """``forward(x)`` = ``segmentor.encode_decode(x, metas)``: per-pixel class logits at
    the input size; works for EncoderDecoder with any decode head (UperNet, SegFormer,
    Mask2Former), which plain ``mode='tensor'`` forwarding does not."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])
        return self.segmentor.encode_decode(x, [meta] * x.shape[0])


def build_segmentor(cfg: Config, drop_auxiliary: bool = True) -> nn.Module:
    """The config's segmentor in eval mode, with random weights (no pretrained download)
    and, by default, without auxiliary heads (training-only)."""
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    model_cfg = cfg.model.copy()
    if model_cfg.get("backbone", {}).get("init_cfg") is not None:
        model_cfg.backbone.init_cfg = None
    model_cfg.pop("pretrained", None)
    if drop_auxiliary and "auxiliary_head" in model_cfg:
        model_cfg.auxiliary_head = None
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    return model.eval()
