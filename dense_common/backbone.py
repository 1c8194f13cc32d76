"""The InternImage trunk as a dense-prediction backbone (dense.md): the one
classification definition without its head, returning NCHW features at strides
4/8/16/32, with ``out_indices``, ``frozen_stages``, ``with_cp``, ``use_dcn_v4_op`` (published switch, same
arithmetic) and an mmengine-style ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

Parameter names stay those of ``classification.models.InternImage`` so that published
detection/segmentation checkpoints (``backbone.patch_embed...``) load unchanged."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from classification.models import InternImage, load_pretrained
from classification.models.checkpoint import LoadReport

_LOGGER = logging.getLogger(__name__)
_HEAD_MODULES = ("conv_head", "head", "avgpool", "dcnv3_head_x4", "dcnv3_head_x3", "clip_projector",
                 "fc_norm")


class InternImageBackbone(InternImage):
    """InternImage for mmdet/mmseg: ``forward`` returns ``tuple`` of the levels in
    ``out_indices`` (channels C·2^i). ``frozen_stages=n`` freezes the stem and
    ``levels[:n]`` (eval mode, no gradients); -1 freezes nothing."""

    def __init__(self, *, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 init_cfg: Mapping | None = None, pretrained: str | None = None, use_dcn_v4_op: bool = False,
                 **kwargs):
        if not isinstance(use_dcn_v4_op, bool):
            raise ValueError(f"use_dcn_v4_op must be True or False, got {use_dcn_v4_op!r}")
        kwargs.pop("num_classes", None)
        kwargs.pop("cls_scale", None)
        if kwargs.get("use_clip_projector"):
            raise ValueError("use_clip_projector is a classification head option; "
                             "a dense backbone has no head")
        super().__init__(num_classes=0, **kwargs)
        for name in _HEAD_MODULES:  # dense checkpoints hold no classifier
            if hasattr(self, name):
                delattr(self, name)
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(not 0 <= i < self.num_levels for i in out_indices):
            raise ValueError(f"out_indices must be level numbers in [0, {self.num_levels}), "
                             f"got {out_indices}")
        if not -1 <= frozen_stages <= self.num_levels:
            raise ValueError(f"frozen_stages must be in [-1, {self.num_levels}], got {frozen_stages}")
        if pretrained is not None:  # mmdet 2 style argument
            if init_cfg is not None:
                raise ValueError("give either pretrained or init_cfg, not both")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        if init_cfg is not None and init_cfg.get("type") != "Pretrained":
            raise ValueError("init_cfg must be dict(type='Pretrained', checkpoint=...), "
                             f"got {dict(init_cfg)}")
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        # The published switch to the DCNv4 kernel, which takes offsets and softmaxed mask
        # packed in one tensor: same parameters, same arithmetic. This project has no DCNv4
        # kernel, so both settings run the DCNv3 one (same outputs, no speed-up).
        self.use_dcn_v4_op = use_dcn_v4_op
        self.init_cfg = dict(init_cfg) if init_cfg is not None else None
        self.out_channels = [int(self.channels * 2 ** i) for i in out_indices]
        self._freeze_stages()

    def init_weights(self) -> None:
        """Called by mmengine's runner: loads ``init_cfg['checkpoint']`` (a classification
        ``{'model': ...}`` or a dense ``{'state_dict': ...}`` checkpoint with ``backbone.``
        keys, a path or URL). Without a checkpoint the construction-time init stands. Tensors
        missing, unexpected or of another shape (beyond the layer-scale gammas and classifier
        tensors a classification checkpoint differs by) are an error unless ``init_cfg`` has
        ``strict=False``, which loads what fits and reports the rest."""
        if not self.init_cfg or not self.init_cfg.get("checkpoint"):
            return
        checkpoint = self.init_cfg["checkpoint"]
        report = load_pretrained(self, checkpoint, strict=False, logger=_UNREPORTED)  # reported once, below
        summary = summarise_load(checkpoint, report)
        if unexpected_load_differences(report, self) and self.init_cfg.get("strict", True):
            raise RuntimeError(f"{summary}\nthe checkpoint does not fit this backbone; set init_cfg="
                               "dict(type='Pretrained', checkpoint=..., strict=False) to load it anyway")
        _print_log(summary)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: list[nn.Module] = [self.patch_embed] + list(self.levels[:self.frozen_stages])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> InternImageBackbone:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.forward_multiscale(x)
        return tuple(features[i] for i in self.out_indices)


# load_pretrained's own log would repeat the report: this logger drops it (summarise_load reports).
_UNREPORTED = logging.Logger("dense_common.backbone.unreported", logging.CRITICAL)
_LAYER_SCALE = re.compile(r"\.gamma[12]$")
_CB_GAMMA = re.compile(r"gamma\d+")


def unexpected_load_differences(report: LoadReport, model: nn.Module | None = None) -> list[str]:
    """Missing, unexpected and shape-mismatched tensors beyond the expected ones: layer-scale
    gammas the dense configs add, classifier-only tensors, and for a CB-InternImage trunk
    its zero-initialised fusion gammas (``gamma{i}``) and the stem it does without."""
    absent = {name for name in ("patch_embed",) if model is not None and not hasattr(model, name)}
    return ([k for k in report.missing if not (_LAYER_SCALE.search(k) or _CB_GAMMA.fullmatch(k))]
            + [k for k in report.unexpected if k.split(".")[0] not in {*_HEAD_MODULES, *absent}]
            + [k for k, _, _ in report.mismatched])


def summarise_load(checkpoint: str, report: LoadReport) -> str:
    """The load report in a few lines: the expected differences between a classification
    checkpoint and a dense backbone (layer-scale ``gamma1``/``gamma2`` the dense configs add,
    classifier-only tensors) in one line each; anything else listed by name."""
    lines = [f"InternImage backbone: loaded {len(report.loaded)} tensors from {checkpoint}"]
    lines += [f"  note: {note}" for note in report.notes]
    gammas = [k for k in report.missing if _LAYER_SCALE.search(k)]
    missing = [k for k in report.missing if k not in gammas]
    head = [k for k in report.unexpected if k.split(".")[0] in _HEAD_MODULES]
    unexpected = [k for k in report.unexpected if k not in head]
    if gammas:
        lines.append(f"  {len(gammas)} layer-scale tensors (gamma1/gamma2) are not in the checkpoint and "
                     "keep their init value: expected, the published dense configs add layer_scale to a "
                     "trunk pretrained without it")
    if head:
        modules = ", ".join(sorted({k.split(".")[0] for k in head}))
        lines.append(f"  ignored {len(head)} classifier-only tensors ({modules})")
    for title, keys in (("missing (kept their init value)", missing), ("unexpected (ignored)", unexpected),
                        ("shape mismatches (kept their init value)",
                         [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in report.mismatched])):
        if keys:
            lines.append(f"  {len(keys)} {title}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}")
    return "\n".join(lines)


def _print_log(message: str) -> None:
    try:
        from mmengine.logging import print_log
    except ImportError:  # usable without mmengine (e.g. feature extraction)
        _LOGGER.info(message)
        return
    print_log(message, logger="current")
