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
(trunk 1 without ``patch_embed``), ``cb_modules.1.gamma{i}`` and ``cb_linears.{i}.{j}``.
The published arguments: ``out_indices=[(0, 1, 2, 3), (1, 2, 3)]`` (per trunk),
``cb_zero_init=True``, ``cb_del_stages=1`` (the lead trunk has no stem of its own; levels
``>= cb_del_stages - 1`` are fed; -1 keeps the lead trunk's own stem)."""

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

    def __init__(self, *, out_indices: Sequence[int] | Sequence[Sequence[int]] = (1, 2, 3),
                 cb_zero_init: bool = True, cb_del_stages: int = 1, init_cfg: Mapping | None = None,
                 **trunk_kwargs):
        super().__init__(init_cfg=None)  # the trunks load the pretrained weights themselves
        if "frozen_stages" in trunk_kwargs and trunk_kwargs["frozen_stages"] != -1:
            raise ValueError("CBInternImage does not support frozen_stages")
        if not cb_zero_init:
            raise ValueError("cb_zero_init=False is not supported: the published CBInternImage always starts "
                             "its gammas at zero (the lead trunk then computes a plain InternImage)")
        num_levels = len(trunk_kwargs.get("depths", (4, 4, 18, 4)))
        if not -1 <= cb_del_stages <= num_levels:
            raise ValueError(f"cb_del_stages must be in [-1, {num_levels}], got {cb_del_stages}")
        self.cb_zero_init = cb_zero_init
        self.cb_del_stages = int(cb_del_stages)
        self.trunk_out_indices = _trunk_out_indices(out_indices, num_levels)
        self.out_indices = self.trunk_out_indices[1]
        all_levels = tuple(range(num_levels))
        self.cb_modules = nn.ModuleList(
            InternImageBackbone(out_indices=all_levels, init_cfg=init_cfg, **trunk_kwargs) for _ in range(2))
        lead = self.cb_modules[1]
        if self.cb_del_stages >= 0:  # published: the lead trunk reuses the assisting trunk's stem output
            del lead.patch_embed
        widths = lead.out_channels
        for i, width in enumerate(widths):  # zero: the lead trunk starts as a plain InternImage
            lead.register_parameter(f"gamma{i}", nn.Parameter(torch.zeros(width)))
        # published: levels below cb_del_stages - 1 get no input from the assisting trunk
        self.fused_levels = tuple(i for i in range(num_levels) if i >= self.cb_del_stages - 1)
        self.cb_linears = nn.ModuleList(
            nn.ModuleList(nn.Identity() if j == i else nn.Conv2d(widths[j], widths[i], 1)
                          for j in range(i, num_levels)) if i in self.fused_levels else nn.ModuleList()
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
        """``(assisting trunk features, lead trunk features)``, each a tuple of NCHW tensors
        at that trunk's ``out_indices``."""
        assist_trunk, lead_trunk = self.cb_modules
        stem = assist_trunk.pos_drop(assist_trunk.patch_embed(x))
        assist = _run_levels(assist_trunk, stem)
        lead_stem = stem if self.cb_del_stages >= 0 else lead_trunk.pos_drop(lead_trunk.patch_embed(x))
        lead = _run_levels(lead_trunk, lead_stem,
                           lambda i, h: self._fused_input(i, assist, h) if i in self.fused_levels else 0)
        assist_indices, lead_indices = self.trunk_out_indices
        return tuple(assist[i] for i in assist_indices), tuple(lead[i] for i in lead_indices)


def _trunk_out_indices(out_indices: Sequence[int] | Sequence[Sequence[int]],
                       num_levels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-trunk level indices. One sequence applies to both trunks; the published form is
    a pair ``[(assisting), (lead)]``, and when the assisting trunk's list is one longer its
    first entry is dropped (the published ``[(0, 1, 2, 3), (1, 2, 3)]`` returns levels 1-3
    of both: the fusion uses all four levels, the necks see three)."""
    items = list(out_indices)
    if items and all(isinstance(i, (list, tuple)) for i in items):
        if len(items) != 2:
            raise ValueError(f"out_indices as per-trunk lists needs two of them, got {out_indices}")
        assist, lead = (tuple(int(i) for i in trunk) for trunk in items)
        if len(assist) == len(lead) + 1:
            assist = assist[1:]
    elif any(isinstance(i, (list, tuple)) for i in items):
        raise ValueError(f"out_indices must be level numbers or two lists of them, got {out_indices}")
    else:
        assist = lead = tuple(int(i) for i in items)
    for trunk in (assist, lead):
        if not trunk or any(not 0 <= i < num_levels for i in trunk):
            raise ValueError(f"out_indices must be level numbers in [0, {num_levels}), got {out_indices}")
    if len(assist) != len(lead):
        raise ValueError(f"both trunks must return as many levels (one neck runs on each), got {out_indices}")
    return assist, lead
