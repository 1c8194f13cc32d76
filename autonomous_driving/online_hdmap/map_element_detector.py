"""``MapElementDetector`` (``head.det_net.*``, driving_hdmap_params.md §4): 120 map elements
as pairs of box-corner queries decoded by a 6-layer pre-norm deformable-DETR decoder over
the 25 x 50 BEV, the published Hungarian assignment (focal + L1 + GIoU costs) and the
focal + smooth-L1 losses.

Library pieces as published: mmcv ``BaseTransformerLayer`` / ``TransformerLayerSequence``
(so the keys are ``transformer.decoder.layers.{l}.attentions.{0,1}``, ``ffns.0``,
``norms.{0,1,2}``), mmcv ``MultiheadAttention`` and ``MultiScaleDeformableAttention`` (run on
the ops_dcnv3 MSDA kernels by ``dense_common.stack_compat.use_ops_dcnv3_msda``), mmdet
``FocalLoss``, ``FocalLossCost``, ``bbox_overlaps``, ``smooth_l1_loss``, ``inverse_sigmoid``,
``reduce_mean``, ``AssignResult`` and scipy's ``linear_sum_assignment``.

Registered (mmdet ``MODELS``): ``MapElementDetector``, ``DeformableDetrTransformer_``,
``DeformableDetrTransformerDecoder_``, ``PlaceHolderEncoder``, ``LinesLoss``; (mmdet
``TASK_UTILS``): ``HungarianLinesAssigner``, ``MapQueriesCost``, ``BBoxCostC``, ``IoUCostC``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmcv.cnn.bricks.transformer import BaseTransformerLayer, TransformerLayerSequence
from mmdet.models.layers.transformer.utils import inverse_sigmoid
from mmdet.models.losses.smooth_l1_loss import smooth_l1_loss
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import nn

from dense_common import stack_compat

from .heads_common import detector_post_process

# mmcv's MSDA module on the ops_dcnv3 kernels (CPU included); idempotent.
stack_compat.use_ops_dcnv3_msda()

PUBLISHED_LAYER_TYPE = "DetrTransformerDecoderLayer"  # the mmdet 2 name in the published config


# --------------------------------------------------------------------------- transformer
@MODELS.register_module()
class PlaceHolderEncoder(nn.Module):
    """The published encoder slot: no parameters, the memory passes unchanged."""

    def __init__(self, *args: Any, embed_dims: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.embed_dims = embed_dims

    def forward(self, *args: Any, query: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
        return query


class MapDetrDecoderLayer(BaseTransformerLayer):
    """What the published config's ``DetrTransformerDecoderLayer`` (mmdet 2) is: an mmcv
    ``BaseTransformerLayer`` with self-attention, cross-attention and FFN; the legacy
    ``feedforward_channels`` / ``ffn_dropout`` arguments go into ``ffn_cfgs`` when it does not
    set them (mmcv would warn about each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ffn_cfgs = copy.deepcopy(kwargs.pop("ffn_cfgs", dict(type="FFN", embed_dims=256)))
        for legacy, new in (("feedforward_channels", "feedforward_channels"), ("ffn_dropout", "ffn_drop")):
            if legacy in kwargs:
                ffn_cfgs.setdefault(new, kwargs.pop(legacy))
        super().__init__(*args, ffn_cfgs=ffn_cfgs, **kwargs)
        if len(self.operation_order) != 6 or set(self.operation_order) != {
            "norm",
            "self_attn",
            "cross_attn",
            "ffn",
        }:
            raise ValueError(
                "operation_order must be a permutation of norm/self_attn/norm/cross_attn/norm/ffn, "
                f"got {self.operation_order}"
            )


def _layer_cfgs(transformerlayers: Mapping | Sequence[Mapping], num_layers: int) -> list[dict]:
    cfgs = (
        [copy.deepcopy(dict(transformerlayers)) for _ in range(num_layers)]
        if isinstance(transformerlayers, Mapping)
        else [copy.deepcopy(dict(c)) for c in transformerlayers]
    )
    if len(cfgs) != num_layers:
        raise ValueError(f"transformerlayers: {len(cfgs)} layer configs for num_layers={num_layers}")
    for cfg in cfgs:
        layer_type = cfg.pop("type", PUBLISHED_LAYER_TYPE)
        if layer_type not in (PUBLISHED_LAYER_TYPE, "BaseTransformerLayer"):
            raise ValueError(
                f"transformerlayers type must be {PUBLISHED_LAYER_TYPE!r} (the published one), "
                f"got {layer_type!r}"
            )
    return cfgs


@MODELS.register_module(name="DeformableDetrTransformerDecoder_")
class DeformableDetrTransformerDecoder(TransformerLayerSequence):
    """Deformable-DETR decoder without box refinement (``reg_branches=None`` published): every
    layer gets the same initial reference points scaled by the valid ratios; with
    ``return_intermediate`` the stacked outputs of all layers ``(L, Q, B, D)``. No final norm."""

    def __init__(
        self,
        transformerlayers: Mapping | Sequence[Mapping],
        num_layers: int,
        return_intermediate: bool = False,
        coord_dim: int = 2,
        init_cfg: Mapping | None = None,
    ) -> None:
        BaseModule.__init__(self, init_cfg)
        if coord_dim != 2:
            raise ValueError(f"coord_dim: only 2 (the published BEV) is supported, got {coord_dim}")
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            MapDetrDecoderLayer(**cfg) for cfg in _layer_cfgs(transformerlayers, num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims
        self.pre_norm = self.layers[0].pre_norm
        self.return_intermediate = return_intermediate
        self.coord_dim = coord_dim

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        *args: Any,
        reference_points: torch.Tensor,
        valid_ratios: torch.Tensor,
        reg_branches: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if reg_branches is not None:
            raise ValueError("reg_branches: iterative box refinement is not published (iterative=False)")
        output = query
        intermediate, refs = [], []
        ref_input = reference_points[:, :, None, :2] * valid_ratios[:, None]
        for layer in self.layers:
            output = layer(output, *args, reference_points=ref_input, **kwargs)
            if self.return_intermediate:
                intermediate.append(output)
                refs.append(reference_points)
        if self.return_intermediate:
            return torch.stack(intermediate), torch.stack(refs)
        return output[None], reference_points[None]


@MODELS.register_module(name="DeformableDetrTransformer_")
class DeformableDetrTransformer(BaseModule):
    """The published single-level transformer: no encoder (``PlaceHolderEncoder``), queries
    split into ``[query_pos | query]``, reference points ``sigmoid(reference_points_embed(
    query_pos))`` fixed for every layer. ``level_embeds`` exists (and is initialised) as
    published but only fed a positional term the decoder never reads, so it is not computed."""

    def __init__(
        self,
        encoder: Mapping,
        decoder: Mapping,
        num_feature_levels: int = 1,
        coord_dim: int = 2,
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if num_feature_levels != 1:
            raise ValueError(f"num_feature_levels: the published BEV has 1 level, got {num_feature_levels}")
        enc = dict(encoder)
        if enc.pop("type", "PlaceHolderEncoder") != "PlaceHolderEncoder":
            raise ValueError("encoder: only the published PlaceHolderEncoder (no encoder) is supported")
        self.encoder = PlaceHolderEncoder(**enc)
        dec = dict(decoder)
        dec_type = dec.pop("type", "DeformableDetrTransformerDecoder_")
        if dec_type != "DeformableDetrTransformerDecoder_":
            raise ValueError(f"decoder type must be 'DeformableDetrTransformerDecoder_', got {dec_type!r}")
        self.decoder = DeformableDetrTransformerDecoder(coord_dim=coord_dim, **dec)
        self.embed_dims = self.decoder.embed_dims
        self.num_feature_levels = num_feature_levels
        self.coord_dim = coord_dim
        self.level_embeds = nn.Parameter(torch.zeros(num_feature_levels, self.embed_dims))
        self.reference_points_embed = nn.Linear(self.embed_dims, coord_dim)

    def init_weights(self) -> None:
        """Xavier on every dim > 1 parameter, then each MSDA's own init, the reference-point
        projection xavier with bias 0, ``level_embeds ~ N(0, 1)`` (the published order)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if type(m).__name__ == "MultiScaleDeformableAttention":
                m.init_weights()
        nn.init.xavier_uniform_(self.reference_points_embed.weight)
        nn.init.zeros_(self.reference_points_embed.bias)
        nn.init.normal_(self.level_embeds)

    def forward(self, feat: torch.Tensor, query_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feat (B, D, H, W)`` (all valid), ``query_embed (B, Q, 2D)`` -> ``hs (L, B, Q, D)``
        and the reference points ``(B, Q, 2)``."""
        b, d, h, w = feat.shape
        if query_embed.ndim != 3 or query_embed.shape[0] != b or query_embed.shape[-1] != 2 * d:
            raise ValueError(
                f"query_embed: expected ({b}, Q, {2 * d}) for feat {tuple(feat.shape)}, "
                f"got {tuple(query_embed.shape)}"
            )
        memory = feat.flatten(2).permute(2, 0, 1)  # (H*W, B, D), row-major
        spatial_shapes = torch.tensor([[h, w]], dtype=torch.long, device=feat.device)
        level_start_index = spatial_shapes.new_zeros(1)
        valid_ratios = feat.new_ones(b, 1, 2)
        query_pos, query = torch.split(query_embed, d, dim=-1)
        reference_points = self.reference_points_embed(query_pos).sigmoid()
        hs, _ = self.decoder(
            query.permute(1, 0, 2),
            key=None,
            value=memory,
            query_pos=query_pos.permute(1, 0, 2),
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
        )
        return hs.permute(0, 2, 1, 3), reference_points


# --------------------------------------------------------------------------- costs / assigner
@TASK_UTILS.register_module()
class BBoxCostC:
    """``weight * L1 cdist`` of ``[x0, y0, x1, y1]`` lines in canvas units (no normalisation)."""

    def __init__(self, weight: float = 1.0, box_format: str = "xyxy") -> None:
        self.weight = weight
        self.box_format = box_format

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return torch.cdist(pred, gt, p=1) * self.weight


@TASK_UTILS.register_module()
class IoUCostC:
    """``-weight * GIoU`` with mmdet's ``bbox_overlaps`` on the raw ``[x0, y0, x1, y1]``
    (no corner reordering: an inverted predicted box has a negative area, as published)."""

    def __init__(self, weight: float = 1.0, box_format: str = "xyxy", iou_mode: str = "giou") -> None:
        if box_format != "xyxy":
            raise ValueError(f"box_format: only 'xyxy' (published) is supported, got {box_format!r}")
        self.weight = weight
        self.iou_mode = iou_mode

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return -bbox_overlaps(pred, gt, mode=self.iou_mode, is_aligned=False) * self.weight


@TASK_UTILS.register_module()
class MapQueriesCost:
    """``cls_cost + reg_cost + iou_cost`` of ``(num_queries, num_gt)``; ``cls_cost`` is
    mmdet's ``FocalLossCost`` on the score logits at each gt's class."""

    def __init__(self, cls_cost: Mapping, reg_cost: Mapping, iou_cost: Mapping | None = None) -> None:
        self.cls_cost = TASK_UTILS.build(dict(cls_cost))
        self.reg_cost = TASK_UTILS.build(dict(reg_cost))
        self.iou_cost = TASK_UTILS.build(dict(iou_cost)) if iou_cost is not None else None

    def __call__(self, preds: Mapping[str, torch.Tensor], gts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cost = self.cls_cost(
            InstanceData(scores=preds["scores"]), InstanceData(labels=gts["labels"])
        ) + self.reg_cost(preds["lines"], gts["lines"])
        if self.iou_cost is not None:
            cost = cost + self.iou_cost(preds["lines"], gts["lines"])
        return cost


@TASK_UTILS.register_module()
class HungarianLinesAssigner:
    """One-to-one assignment of queries to gt lines minimising ``MapQueriesCost`` (scipy's
    ``linear_sum_assignment``, rows = queries); unmatched queries are background.
    Returns mmdet's ``AssignResult`` (``gt_inds``: 0 background, ``k + 1`` = gt ``k``)."""

    def __init__(self, cost: Mapping, **kwargs: Any) -> None:
        self.cost = TASK_UTILS.build(dict(cost))

    def assign(self, preds: Mapping[str, torch.Tensor], gts: Mapping[str, torch.Tensor]) -> AssignResult:
        lines, scores = preds["lines"], preds["scores"]
        gt_lines, gt_labels = gts["lines"], gts["labels"]
        num_q, num_gt = lines.shape[0], gt_lines.shape[0]
        if gt_lines.ndim != 2 or gt_lines.shape[-1] != lines.shape[-1] or gt_labels.shape != (num_gt,):
            raise ValueError(
                f"gts: lines (n, {lines.shape[-1]}) and labels (n,) expected, got "
                f"{tuple(gt_lines.shape)}, {tuple(gt_labels.shape)}"
            )
        gt_inds = lines.new_zeros(num_q, dtype=torch.long)
        labels = lines.new_full((num_q,), -1, dtype=torch.long)
        if num_gt == 0:
            return AssignResult(0, gt_inds, None, labels=labels)
        cost = self.cost({"lines": lines, "scores": scores}, {"lines": gt_lines, "labels": gt_labels})
        cost = cost.detach().cpu().float().numpy()
        if not np.isfinite(cost).all():
            raise ValueError(
                "HungarianLinesAssigner: the cost matrix has NaN/inf entries (diverged predictions?)"
            )
        rows, cols = linear_sum_assignment(cost)
        rows_t = torch.from_numpy(rows).to(lines.device)
        cols_t = torch.from_numpy(cols).to(lines.device)
        gt_inds[rows_t] = cols_t + 1
        labels[rows_t] = gt_labels[cols_t]
        return AssignResult(num_gt, gt_inds, None, labels=labels)


# --------------------------------------------------------------------------- losses
@MODELS.register_module()
class LinesLoss(nn.Module):
    """Smooth-L1 (``beta`` 0.5 published) on line coordinates in canvas units, weighted,
    summed and divided by ``avg_factor + eps`` (mmdet's ``weight_reduce_loss``), times
    ``loss_weight``."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, beta: float = 0.5) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.beta = beta

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
    ) -> torch.Tensor:
        loss = smooth_l1_loss(
            pred, target, weight, beta=self.beta, reduction=self.reduction, avg_factor=avg_factor
        )
        return self.loss_weight * loss


# --------------------------------------------------------------------------- detector
def coord_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(h, w, 2)`` with ``[i, j] = (linspace(-1, 1, h)[i], linspace(-1, 1, w)[j])``: row (y)
    first, as published (shared by the detector's and the generator's ``img_coord_embed``)."""
    hs = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    ws = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(hs, ws, indexing="ij"), -1)


@MODELS.register_module()
class MapElementDetector(nn.Module):
    """Detect ``num_query`` map elements, each two keypoints (box corners, ``bbox_size=2``) in
    canvas units, with per-class logits from the concatenated keypoint features.

    ``forward(context)`` -> one dict per decoder layer ``{'lines' (B, Q, 4) [x0, y0, x1, y1],
    'scores' (B, Q, classes) logits, 'embeddings' (B, Q, 2, D)}``; ``loss(gts, preds)`` ->
    ``({'cls', 'reg', 'd{k}.cls', 'd{k}.reg'}, matching)``; ``post_process(preds)`` -> the
    top-``max_lines`` selection. Options the published model does not use
    (``separate_detect``, ``discrete_output``, ``iterative``, other modes) raise.
    """

    def __init__(
        self,
        num_query: int = 120,
        max_lines: int = 35,
        bbox_size: int = 2,
        mode: str = "xyxy",
        canvas_size: Sequence[int] = (200, 100),
        separate_detect: bool = False,
        discrete_output: bool = False,
        num_classes: int = 3,
        in_channels: int = 128,
        score_thre: float = 0.1,
        num_reg_fcs: int = 2,
        num_points: int = 4,
        iterative: bool = False,
        pc_range: Sequence[float] | None = None,
        sync_cls_avg_factor: bool = True,
        coord_dim: int = 2,
        kp_coord_dim: int = 2,
        transformer: Mapping | None = None,
        positional_encoding: Mapping | None = None,
        loss_cls: Mapping | None = None,
        loss_reg: Mapping | None = None,
        train_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__()
        for name, value, published in (
            ("separate_detect", separate_detect, False),
            ("discrete_output", discrete_output, False),
            ("iterative", iterative, False),
            ("mode", mode, "xyxy"),
            ("bbox_size", bbox_size, 2),
            ("coord_dim", coord_dim, 2),
            ("kp_coord_dim", kp_coord_dim, 2),
        ):
            if value != published:
                raise ValueError(
                    f"MapElementDetector: {name}={value!r} is not supported (published: {published!r})"
                )
        if transformer is None:
            raise ValueError("MapElementDetector: transformer config is required")
        if max_lines > num_query * num_classes:
            raise ValueError(
                f"max_lines ({max_lines}) exceeds num_query x num_classes ({num_query * num_classes})"
            )
        self.num_query = num_query
        self.max_lines = max_lines
        self.bbox_size = bbox_size
        self.mode = mode
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.score_thre = score_thre  # never applied, as published
        self.num_reg_fcs = num_reg_fcs
        self.num_points = num_points  # unused, as published
        self.pc_range = pc_range
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.coord_dim = coord_dim
        self.kp_coord_dim = kp_coord_dim
        self.bg_cls_weight = 0.0  # sigmoid focal loss: no background class weight
        self.register_buffer("canvas_size", torch.tensor(list(canvas_size), dtype=torch.long))

        # Build order as published: transformer, input_proj, placeholder query table, branches.
        tcfg = dict(transformer)
        if tcfg.pop("type", "DeformableDetrTransformer_") != "DeformableDetrTransformer_":
            raise ValueError("transformer type must be 'DeformableDetrTransformer_' (published)")
        self.transformer = DeformableDetrTransformer(**tcfg)
        self.embed_dims = d = self.transformer.embed_dims
        self.positional_encoding = (
            MODELS.build(dict(positional_encoding)) if positional_encoding is not None else None
        )  # built as published; its output is never used by the decoder, so not computed
        self.input_proj = nn.Conv2d(in_channels, d, kernel_size=1)
        self.query_embedding = nn.Embedding(num_query, d)  # replaced in _init_embedding
        self._init_branch()
        self.loss_cls = MODELS.build(
            dict(loss_cls or dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0))
        )
        if not getattr(self.loss_cls, "use_sigmoid", False):
            raise ValueError("loss_cls: the published detector uses a sigmoid FocalLoss (use_sigmoid=True)")
        self.loss_reg = MODELS.build(dict(loss_reg or dict(type="LinesLoss", loss_weight=0.1)))
        train_cfg = dict(train_cfg or {})
        if "assigner" not in train_cfg:
            raise ValueError("MapElementDetector: train_cfg['assigner'] (HungarianLinesAssigner) is required")
        self.assigner = TASK_UTILS.build(dict(train_cfg["assigner"]))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_weights()
        self._init_embedding()

    def _init_branch(self) -> None:
        d = self.embed_dims
        cls = nn.Linear(d * self.bbox_size, self.num_classes)
        layers: list[nn.Module] = []
        for _ in range(self.num_reg_fcs):
            layers += [nn.Linear(d, d), nn.LayerNorm(d), nn.ReLU()]
        layers.append(nn.Linear(d, self.kp_coord_dim))
        reg = nn.Sequential(*layers)
        n = self.transformer.decoder.num_layers
        # iterative=False: one shared module listed once per layer (6 key copies, one set of weights).
        self.pre_branches = nn.ModuleDict({"cls": nn.ModuleList([cls] * n), "reg": nn.ModuleList([reg] * n)})

    def init_weights(self) -> None:
        nn.init.xavier_uniform_(self.input_proj.weight)
        self.transformer.init_weights()
        for p in self.pre_branches.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        bias = -math.log((1 - 0.01) / 0.01)  # prior probability 0.01
        nn.init.constant_(self.pre_branches["cls"][0].bias, bias)

    def _init_embedding(self) -> None:
        d = self.embed_dims
        self.label_embed = nn.Embedding(self.num_classes, d)  # unused, as published
        self.img_coord_embed = nn.Linear(2, d)
        self.query_embedding = nn.Embedding(self.num_query, d * 2)
        self.bbox_embedding = nn.Embedding(self.bbox_size, d * 2)

    # ----------------------------------------------------------------- forward
    def forward(self, context: Mapping[str, Any]) -> list[dict[str, torch.Tensor]]:
        bev = context["bev_embeddings"]
        if bev.ndim != 4 or bev.shape[1] != self.in_channels:
            raise ValueError(
                f"bev_embeddings: expected (B, {self.in_channels}, H, W), got {tuple(bev.shape)}"
            )
        b, _, h, w = bev.shape
        x = self.input_proj(bev)
        x = x + self.img_coord_embed(coord_grid(h, w, x.device, x.dtype)).permute(2, 0, 1)[None]
        q = self.query_embedding.weight[None, :, None, :].repeat(b, 1, self.bbox_size, 1)
        q = (q + self.bbox_embedding.weight[None, None]).view(b, self.num_query * self.bbox_size, -1)
        hs, reference = self.transformer(x, q)
        return [self.get_prediction(level, hs[level], reference) for level in range(hs.shape[0])]

    def get_prediction(
        self, level: int, hidden: torch.Tensor, reference: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b = hidden.shape[0]
        f = hidden.view(b, self.num_query, self.bbox_size, self.embed_dims)
        scores = self.pre_branches["cls"][level](f.flatten(-2))
        ref = inverse_sigmoid(reference).view(b, self.num_query, self.bbox_size, self.kp_coord_dim)
        lines = (self.pre_branches["reg"][level](f) + ref).sigmoid() * self.canvas_size.to(f.dtype)
        return {"lines": lines.flatten(-2), "scores": scores, "embeddings": f}

    # ----------------------------------------------------------------- loss
    def _targets(
        self, preds: Mapping[str, torch.Tensor], gts: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, list[AssignResult]]:
        lines, scores = preds["lines"], preds["scores"]
        b, q, _ = lines.shape
        labels = lines.new_full((b, q), self.num_classes, dtype=torch.long)
        label_weights = lines.new_ones(b, q)
        lines_target = torch.zeros_like(lines)
        lines_weights = torch.zeros_like(lines)
        num_pos = 0
        results = []
        for i, gt in enumerate(gts):
            gt_lines = gt["bbox"].to(lines.dtype)
            gt_labels = gt["class_label"].long()
            res = self.assigner.assign(
                {"lines": lines[i].detach(), "scores": scores[i].detach()},
                {"lines": gt_lines, "labels": gt_labels},
            )
            pos = res.gt_inds > 0
            idx = res.gt_inds[pos] - 1
            labels[i, pos] = gt_labels[idx]
            lines_target[i, pos] = gt_lines[idx]
            lines_weights[i, pos] = 1.0
            num_pos += int(pos.sum())
            results.append(res)
        # Each matched query's 4 coordinate weights normalised to sum 1 (0.25 each).
        row = lines_weights.sum(-1, keepdim=True)
        lines_weights = lines_weights / torch.where(row > 0, row, torch.ones_like(row))
        num_neg = b * q - num_pos
        return labels, label_weights, lines_target, lines_weights, num_pos, num_neg, results

    def loss_single(
        self, preds: Mapping[str, torch.Tensor], gts: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], list[AssignResult]]:
        labels, label_weights, lines_target, lines_weights, num_pos, num_neg, results = self._targets(
            preds, gts
        )
        scores = preds["scores"].reshape(-1, self.num_classes)
        cls_avg = scores.new_tensor([num_pos * 1.0 + num_neg * self.bg_cls_weight])
        if self.sync_cls_avg_factor:
            cls_avg = reduce_mean(cls_avg)
        cls_avg = max(float(cls_avg), 1.0)
        loss_cls = self.loss_cls(scores, labels.reshape(-1), label_weights.reshape(-1), avg_factor=cls_avg)
        total_pos = torch.clamp(reduce_mean(scores.new_tensor([float(num_pos)])), min=1).item()
        loss_reg = self.loss_reg(
            preds["lines"].reshape(-1, 4),
            lines_target.reshape(-1, 4),
            lines_weights.reshape(-1, 4),
            avg_factor=total_pos,
        )
        return {"cls": loss_cls, "reg": loss_reg}, results

    def loss(
        self, gts: Sequence[Mapping[str, torch.Tensor]], preds: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], list[list[AssignResult]]]:
        """Per decoder layer, the same losses: the last layer's as ``cls`` / ``reg``, layer
        ``k`` < last as ``d{k}.cls`` / ``d{k}.reg``. ``gts``: per image ``{'bbox' (n, 4) canvas
        units, 'class_label' (n,)}``."""
        if len(preds) == 0 or len(gts) != preds[0]["lines"].shape[0]:
            raise ValueError(
                f"loss: {len(gts)} gt entries for a batch of {preds[0]['lines'].shape[0] if preds else 0}"
            )
        losses: dict[str, torch.Tensor] = {}
        matches = []
        last = len(preds) - 1
        for k, layer_preds in enumerate(preds):
            layer_losses, results = self.loss_single(layer_preds, gts)
            prefix = "" if k == last else f"d{k}."
            for name, value in layer_losses.items():
                losses[prefix + name] = value
            matches.append(results)
        # Published order: last layer first, then d0..d4.
        ordered = {"cls": losses.pop("cls"), "reg": losses.pop("reg")}
        ordered.update(losses)
        return ordered, matches

    # ----------------------------------------------------------------- inference
    def post_process(self, preds: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        last = preds[-1]
        return detector_post_process(last["lines"], last["scores"], self.max_lines)
