"""Backbones: ``InternImage`` (the shared dense backbone) and ``CBInternImage``, a
composite backbone of two InternImage trunks (CBNet-style).

CBInternImage: trunk 0 (the assisting trunk) runs as usual. Trunk 1 (the lead trunk)
starts from trunk 0's stem output and, before each of its levels i, adds
``gamma_i * sum_{j >= i} resize(conv1x1_ij(f0_j))`` where f0_j are trunk 0's level
outputs: each deeper-or-equal level is projected to level i's width and resized to the
lead trunk's current resolution. The gammas start at zero, so at initialisation the lead
trunk computes exactly what a single InternImage would. ``forward`` returns the selected
levels of both trunks; ``CBDINO`` supervises both and predicts from the lead trunk.

Parameter names follow the published CB-InternImage checkpoints: ``cb_modules.{0,1}``
(trunk 1 without ``patch_embed``), ``cb_modules.1.gamma{i}`` and ``cb_linears.{i}.{j}``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from dense_common import InternImageBackbone

InternImage = MODELS.register_module(name="InternImage", module=InternImageBackbone)

Features = tuple[torch.Tensor, ...]


def _run_levels(trunk: InternImageBackbone, x: torch.Tensor,
                fuse: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Level outputs (NCHW) of ``trunk`` from its stem output ``x`` (NHWC); ``fuse(i, x)``
    returns what is added to the input of level i."""
    features = []
    for i, level in enumerate(trunk.levels):
        if fuse is not None:
            x = x + fuse(i, x)
        x, feature = level(x, return_wo_downsample=True)
        features.append(feature.permute(0, 3, 1, 2).contiguous())
    return features


@MODELS.register_module()
class CBInternImage(BaseModule):
    """Two InternImage trunks with the same settings (any ``InternImageBackbone``
    argument); ``out_indices`` selects the levels returned for each trunk.
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` initialises both trunks from one
    classification or dense checkpoint."""

    def __init__(self, *, out_indices: Sequence[int] = (1, 2, 3), init_cfg: Mapping | None = None,
                 **trunk_kwargs):
        super().__init__(init_cfg=None)  # the trunks load the pretrained weights themselves
        if "frozen_stages" in trunk_kwargs and trunk_kwargs["frozen_stages"] != -1:
            raise ValueError("CBInternImage does not support frozen_stages")
        num_levels = len(trunk_kwargs.get("depths", (4, 4, 18, 4)))
        all_levels = tuple(range(num_levels))
        self.cb_modules = nn.ModuleList(
            InternImageBackbone(out_indices=all_levels, init_cfg=init_cfg, **trunk_kwargs) for _ in range(2))
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < num_levels for i in self.out_indices):
            raise ValueError(f"out_indices must be level numbers in [0, {num_levels}), got {out_indices}")
        lead = self.cb_modules[1]
        del lead.patch_embed  # the lead trunk reuses the assisting trunk's stem output
        widths = lead.out_channels
        for i, width in enumerate(widths):  # zero: the lead trunk starts as a plain InternImage
            lead.register_parameter(f"gamma{i}", nn.Parameter(torch.zeros(width)))
        self.cb_linears = nn.ModuleList(
            nn.ModuleList(nn.Identity() if j == i else nn.Conv2d(widths[j], widths[i], 1)
                          for j in range(i, num_levels))
            for i in range(num_levels))
        self.out_channels = [widths[i] for i in self.out_indices]

    def init_weights(self) -> None:
        # mmengine's BaseModule.init_weights only visits direct children, and the trunks
        # sit inside a ModuleList: load their pretrained weights explicitly.
        super().init_weights()
        for trunk in self.cb_modules:
            trunk.init_weights()

    def _fused_input(self, i: int, assist: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        size = x.shape[1:3]
        total = 0
        for offset, project in enumerate(self.cb_linears[i]):
            total = total + F.interpolate(project(assist[i + offset]), size=size, mode="nearest")
        gamma = getattr(self.cb_modules[1], f"gamma{i}")
        return gamma * total.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[Features, Features]:
        """``(assisting trunk features, lead trunk features)``, each a tuple over
        ``out_indices`` of NCHW tensors."""
        assist_trunk, lead_trunk = self.cb_modules
        stem = assist_trunk.pos_drop(assist_trunk.patch_embed(x))
        assist = _run_levels(assist_trunk, stem)
        lead = _run_levels(lead_trunk, stem, lambda i, h: self._fused_input(i, assist, h))
        return tuple(assist[i] for i in self.out_indices), tuple(lead[i] for i in self.out_indices)
