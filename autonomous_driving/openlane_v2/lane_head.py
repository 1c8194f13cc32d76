"""The lane-centerline head of ROAD_BEVFormer (driving_openlane_params.md §3):
``LCDeformableDETRHead`` over ``PerceptionTransformer`` / ``LaneDetectionTransformerDecoder``
(6 post-norm ``CustomDetrTransformerDecoderLayer``: MHA + ``CustomMSDeformableAttention`` on
the BEV), the ``LaneHungarianAssigner`` (focal cost + ``LaneL1Cost``) and the losses.

Each query regresses 5 control points x (x, y, z): ``sigmoid(tmp + inverse_sigmoid(ref))``
scaled into ``pc_range``, the same 3-D reference added to all 5 points; the reference
points are never refined (``reg_branches=None`` in the decoder). Published names and init.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from mmcv.cnn.bricks.transformer import BaseTransformerLayer, TransformerLayerSequence
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.models.task_modules.assigners import HungarianAssigner
from mmdet.models.task_modules.assigners.assign_result import AssignResult
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob, xavier_init
from mmengine.structures import InstanceData
from torch import nn

from autonomous_driving.bev_common.attention import (
    CustomMSDeformableAttention,
    MSDeformableAttention3D,
    TemporalSelfAttention,
    in_mmdet_scope,
)

from .bev_constructor import PC_RANGE

F32_EPS = torch.finfo(torch.float32).eps


_DEPRECATED = ("feedforward_channels", "ffn_dropout", "ffn_num_fcs", "act_cfg")


def warn_unused(where: str, kwargs: Mapping) -> None:
    """Published config arguments this port does not read (mmdet 2.x leftovers), named."""
    if kwargs:
        warnings.warn(f"{where}: ignoring arguments {sorted(kwargs)}", stacklevel=3)


def attention_cfg(cfg: Mapping) -> dict:
    """An attention config in mmdet's scope; mmcv ``MultiheadAttention``'s deprecated
    ``dropout=p`` (the published form) spelled out as ``attn_drop=p`` and a Dropout(p)
    ``dropout_layer`` (mmcv's own conversion writes p into its shared default dict)."""
    out = dict(cfg)
    if out.get("type") == "MultiheadAttention" and "dropout" in out:
        p = out.pop("dropout")
        out["attn_drop"] = p
        out["dropout_layer"] = dict(type="Dropout", drop_prob=p)
    return in_mmdet_scope(out)


def layer_cfg(cfg: Mapping, where: str) -> dict:
    """A transformer-layer config written with the mmcv-1.x arguments of the published configs
    (``feedforward_channels``, ``ffn_dropout``, ``ffn_num_fcs``) as mmcv-2 ``ffn_cfgs`` (its
    ``embed_dims`` taken from the attentions; mmcv 2's own conversion writes into a shared
    default dict and keeps ``embed_dims=256``), every child in mmdet's scope."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"{where}: transformerlayers must be a layer config dict, got {cfg!r}")
    out = dict(cfg)
    attns = out.get("attn_cfgs")
    attns = [attns] if isinstance(attns, Mapping) else list(attns or [])
    if not attns:
        raise ValueError(f"{where}: the layer config needs attn_cfgs")
    out["attn_cfgs"] = [attention_cfg(c) for c in attns]
    old = {k: out.pop(k) for k in _DEPRECATED if k in out}
    ffn = out.get("ffn_cfgs")
    if ffn is None:
        if "feedforward_channels" not in old:
            raise ValueError(f"{where}: the layer config needs feedforward_channels (or ffn_cfgs)")
        ffn = dict(
            type="FFN",
            embed_dims=out["attn_cfgs"][0].get("embed_dims", 256),
            feedforward_channels=old["feedforward_channels"],
            num_fcs=old.get("ffn_num_fcs", 2),
            ffn_drop=old.get("ffn_dropout", 0.0),
            act_cfg=dict(old.get("act_cfg", dict(type="ReLU", inplace=True))),
        )
    out["ffn_cfgs"] = in_mmdet_scope(ffn) if isinstance(ffn, Mapping) else [in_mmdet_scope(f) for f in ffn]
    return in_mmdet_scope(out)


def sequence_args(args: tuple, kwargs: dict, where: str) -> tuple[tuple, dict]:
    """``TransformerLayerSequence`` arguments with every layer config through ``layer_cfg``."""
    layers = kwargs.get("transformerlayers", args[0] if args else None)
    layers = [layer_cfg(c, where) for c in layers] if isinstance(layers, list) else layer_cfg(layers, where)
    if args:
        return (layers, *args[1:]), kwargs
    return args, {**kwargs, "transformerlayers": layers}


@MODELS.register_module()
class CustomDetrTransformerDecoderLayer(BaseTransformerLayer):
    """The published lane-decoder layer: an mmcv ``BaseTransformerLayer`` (its sequence
    converts the mmcv-1.x arguments, ``layer_cfg``); the published layer adds nothing else."""


@MODELS.register_module()
class LaneDetectionTransformerDecoder(TransformerLayerSequence):
    """``forward(query (nq, B, C), key, value (HW, B, C), query_pos=, reference_points
    (B, nq, 3), ...)`` -> ``(states (L, nq, B, C), references (L, B, nq, 3))``; the layers
    see ``reference_points[..., :2]`` as one level. With ``reg_branches`` given (not the
    published config) the references are refined as in Deformable DETR."""

    def __init__(self, *args, return_intermediate: bool = False, **kwargs) -> None:
        args, kwargs = sequence_args(args, kwargs, type(self).__name__)
        super().__init__(*args, **kwargs)
        self.return_intermediate = return_intermediate
        self.fp16_enabled = False

    def forward(
        self,
        query: torch.Tensor,
        *args,
        reference_points: torch.Tensor,
        reg_branches: nn.ModuleList | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output = query
        intermediate, intermediate_refs = [], []
        for lid, layer in enumerate(self.layers):
            ref_input = reference_points[..., :2].unsqueeze(2)  # (B, nq, 1 level, 2)
            output = layer(
                output, *args, reference_points=ref_input, key_padding_mask=key_padding_mask, **kwargs
            )
            if reg_branches is not None:
                tmp = reg_branches[lid](output.permute(1, 0, 2))[..., :3]
                reference_points = (tmp + inverse_sigmoid(reference_points)).sigmoid().detach()
            if self.return_intermediate:
                intermediate.append(output)
                intermediate_refs.append(reference_points)
        if self.return_intermediate:
            return torch.stack(intermediate), torch.stack(intermediate_refs)
        return output[None], reference_points[None]


@MODELS.register_module()
class PerceptionTransformer(BaseModule):
    """The lane head's transformer: ``reference_points`` Linear(C, 3) on the query positions,
    the decoder over the BEV features. ``forward`` returns ``(states (L, nq, B, C),
    init_reference (B, nq, 3), inter_references (L, B, nq, 3))``."""

    def __init__(
        self, *, decoder: Mapping, embed_dims: int = 256, init_cfg: Mapping | None = None, **kwargs
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        warn_unused("PerceptionTransformer", kwargs)
        self.decoder = MODELS.build(in_mmdet_scope(decoder))
        self.embed_dims = embed_dims
        if self.decoder.embed_dims != embed_dims:
            raise ValueError(
                f"PerceptionTransformer: decoder embed_dims {self.decoder.embed_dims} != "
                f"embed_dims {embed_dims}"
            )
        self.reference_points = nn.Linear(embed_dims, 3)

    def init_weights(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, (MSDeformableAttention3D, TemporalSelfAttention, CustomMSDeformableAttention)):
                m.init_weights()
        xavier_init(self.reference_points, distribution="uniform", bias=0.0)
        self._is_init = True

    def forward(
        self,
        bev_embed: torch.Tensor,
        object_query_embed: torch.Tensor,
        bev_h: int,
        bev_w: int,
        reg_branches: nn.ModuleList | None = None,
        **kwargs,
    ):
        bs = bev_embed.shape[0]
        if (
            bev_embed.dim() != 3
            or bev_embed.shape[1] != bev_h * bev_w
            or bev_embed.shape[2] != self.embed_dims
        ):
            raise ValueError(
                f"PerceptionTransformer: bev_embed must be (B, {bev_h * bev_w}, {self.embed_dims}), "
                f"got {tuple(bev_embed.shape)}"
            )
        query_pos, query = torch.split(object_query_embed, self.embed_dims, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(bs, -1, -1)
        query = query.unsqueeze(0).expand(bs, -1, -1)
        reference_points = self.reference_points(query_pos).sigmoid()
        init_reference = reference_points
        states, inter_refs = self.decoder(
            query=query.permute(1, 0, 2),
            key=None,
            value=bev_embed.permute(1, 0, 2),
            query_pos=query_pos.permute(1, 0, 2),
            reference_points=reference_points,
            reg_branches=reg_branches,
            spatial_shapes=torch.tensor([[bev_h, bev_w]], device=query.device),
            level_start_index=torch.tensor([0], device=query.device),
            **kwargs,
        )
        return states, init_reference, inter_refs


@TASK_UTILS.register_module()
class LaneL1Cost:
    """``weight · Σ |pred − gt|`` over the flat control points (metres), (num_preds, num_gts)."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(
        self, pred_instances: InstanceData, gt_instances: InstanceData, img_meta=None, **kwargs
    ) -> torch.Tensor:
        return torch.cdist(pred_instances.lanes, gt_instances.lanes, p=1) * self.weight


@TASK_UTILS.register_module()
class LaneHungarianAssigner(HungarianAssigner):
    """``cls_cost`` (FocalLossCost on the logits) + ``reg_cost`` (LaneL1Cost), solved by
    ``linear_sum_assignment``; ``iou_cost`` is built and, as published, not added."""

    def __init__(
        self,
        cls_cost: Mapping = dict(type="FocalLossCost", weight=1.5),
        reg_cost: Mapping = dict(type="LaneL1Cost", weight=0.0075),
        iou_cost: Mapping = dict(type="IoUCost", weight=0.0),
        pc_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__(match_costs=[dict(cls_cost), dict(reg_cost)])
        self.pc_range = pc_range  # accepted as published; the costs are in metres already
        self.iou_cost = TASK_UTILS.build(dict(iou_cost))  # unused, as published

    def assign_lanes(
        self, cls_logits: torch.Tensor, lanes: torch.Tensor, gt_lanes: torch.Tensor, gt_labels: torch.Tensor
    ) -> AssignResult:
        """``cls_logits`` (nq, C), ``lanes`` (nq, D), ``gt_lanes`` (n, D), ``gt_labels`` (n,)."""
        pred = InstanceData(scores=cls_logits, lanes=lanes)
        gt = InstanceData(labels=gt_labels, lanes=gt_lanes)
        return self.assign(pred, gt, img_meta={})


def _branch_cls(embed_dims: int, num_reg_fcs: int, out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_reg_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(embed_dims, out))
    return nn.Sequential(*layers)


def _branch_reg(embed_dims: int, num_reg_fcs: int, out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_reg_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
    layers.append(nn.Linear(embed_dims, out))
    return nn.Sequential(*layers)


def gt_lanes_tensor(gt: torch.Tensor, code_size: int, where: str) -> torch.Tensor:
    """``gt_lc`` as (n, code_size); the published empty ``(0,)`` gives (0, code_size)."""
    gt = torch.as_tensor(gt)
    if gt.numel() == 0:
        return gt.new_zeros((0, code_size), dtype=torch.float32)
    if gt.dim() != 2 or gt.shape[1] != code_size:
        raise ValueError(
            f"{where}: gt_lc must be (n, {code_size}) flat control points (after "
            f"CustomParameterizeLane), got shape {tuple(gt.shape)}"
        )
    return gt.float()


@MODELS.register_module()
class LCDeformableDETRHead(BaseModule):
    """``forward(mlvl_feats, bev_feats (B, HW, C), img_metas)`` ->
    ``{'all_cls_scores' (L, B, nq, 1), 'all_lanes_preds' (L, B, nq, code_size) metres,
    'history_states' (L, B, nq, C)}``; ``loss(...)`` -> ``(losses, assign_results)``."""

    def __init__(
        self,
        *,
        num_classes: int = 1,
        in_channels: int = 256,
        num_query: int = 100,
        num_reg_fcs: int = 2,
        code_size: int = 15,
        code_weights: Sequence[float] | None = None,
        with_box_refine: bool = False,
        with_shared_param: bool | None = None,
        sync_cls_avg_factor: bool = False,
        bev_h: int = 100,
        bev_w: int = 200,
        pc_range: Sequence[float] = PC_RANGE,
        transformer: Mapping,
        loss_cls: Mapping = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.5),
        loss_bbox: Mapping = dict(type="L1Loss", loss_weight=0.0075),
        loss_iou: Mapping = dict(type="GIoULoss", loss_weight=0.0),
        train_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
        init_cfg: Mapping | None = None,
        **kwargs,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        warn_unused("LCDeformableDETRHead", kwargs)
        if code_size % 3:
            raise ValueError(f"LCDeformableDETRHead: code_size must be 3 x control points, got {code_size}")
        if not dict(loss_cls).get("use_sigmoid", False):
            raise ValueError("LCDeformableDETRHead: loss_cls must be a sigmoid loss (use_sigmoid=True)")
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.in_channels = in_channels
        self.embed_dims = in_channels
        self.num_query = num_query
        self.num_reg_fcs = num_reg_fcs
        self.code_size = code_size
        self.with_box_refine = with_box_refine
        self.with_shared_param = with_box_refine if with_shared_param is None else with_shared_param
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.bev_h, self.bev_w = bev_h, bev_w
        self.pc_range = [float(v) for v in pc_range]
        self.bg_cls_weight = 0.0
        weights = [1.0] * code_size if code_weights is None else list(code_weights)
        if len(weights) != code_size:
            raise ValueError(f"LCDeformableDETRHead: {len(weights)} code_weights for code_size {code_size}")
        self.code_weights = nn.Parameter(torch.tensor(weights), requires_grad=False)
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        self.assigner = TASK_UTILS.build(
            dict((train_cfg or {}).get("assigner", dict(type="LaneHungarianAssigner")))
        )
        self.loss_cls = MODELS.build(dict(loss_cls))
        self.loss_bbox = MODELS.build(dict(loss_bbox))
        self.loss_iou = MODELS.build(dict(loss_iou))  # built, never used (published)
        self.transformer = MODELS.build(in_mmdet_scope(transformer))
        num_pred = self.transformer.decoder.num_layers
        cls = _branch_cls(self.embed_dims, num_reg_fcs, self.cls_out_channels)
        reg = _branch_reg(self.embed_dims, num_reg_fcs, code_size)
        if self.with_shared_param:
            self.cls_branches = nn.ModuleList([cls for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([reg for _ in range(num_pred)])
        else:
            self.cls_branches = nn.ModuleList([copy.deepcopy(cls) for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([copy.deepcopy(reg) for _ in range(num_pred)])
        self.query_embedding = nn.Embedding(num_query, self.embed_dims * 2)

    def init_weights(self) -> None:
        self.transformer.init_weights()
        bias = bias_init_with_prob(0.01)
        for branch in self.cls_branches:
            nn.init.constant_(branch[-1].bias, bias)
        self._is_init = True

    def forward(self, mlvl_feats, bev_feats: torch.Tensor, img_metas=None) -> dict[str, torch.Tensor]:
        dtype = bev_feats.dtype
        states, init_reference, inter_refs = self.transformer(
            bev_feats,
            self.query_embedding.weight.to(dtype),
            self.bev_h,
            self.bev_w,
            reg_branches=self.reg_branches if self.with_box_refine else None,
        )
        states = states.permute(0, 2, 1, 3)  # (L, B, nq, C)
        lo = states.new_tensor(self.pc_range[:3])
        span = states.new_tensor(self.pc_range[3:]) - lo
        all_cls, all_lanes = [], []
        for lvl in range(states.shape[0]):
            reference = init_reference if lvl == 0 else inter_refs[lvl - 1]
            reference = inverse_sigmoid(reference)  # eps 1e-5
            cls = self.cls_branches[lvl](states[lvl])
            tmp = self.reg_branches[lvl](states[lvl])
            points = tmp.view(*tmp.shape[:-1], -1, 3) + reference[..., None, :]  # same ref for every point
            points = points.sigmoid() * span + lo
            all_cls.append(cls)
            all_lanes.append(points.flatten(-2))
        return {
            "all_cls_scores": torch.stack(all_cls),
            "all_lanes_preds": torch.stack(all_lanes),
            "history_states": states,
        }

    # -- loss ---------------------------------------------------------------------------------

    def _targets(
        self, cls: torch.Tensor, lanes: torch.Tensor, gt_lanes: torch.Tensor, gt_labels: torch.Tensor
    ):
        result = self.assigner.assign_lanes(cls, lanes, gt_lanes, gt_labels)
        pos = torch.nonzero(result.gt_inds > 0, as_tuple=False).squeeze(-1)
        pos_gt = result.gt_inds[pos] - 1
        labels = lanes.new_full((lanes.shape[0],), self.num_classes, dtype=torch.long)
        labels[pos] = gt_labels[pos_gt].long()
        targets = torch.zeros_like(lanes)
        weights = torch.zeros_like(lanes)
        if len(pos):
            targets[pos] = gt_lanes[pos_gt].to(lanes.dtype)
            weights[pos] = 1.0
        return labels, targets, weights, pos, pos_gt

    def loss_single(
        self,
        cls_scores: torch.Tensor,
        lanes_preds: torch.Tensor,
        gt_lanes_list: Sequence[torch.Tensor],
        gt_labels_list: Sequence[torch.Tensor],
    ):
        bs = cls_scores.shape[0]
        per = [
            self._targets(cls_scores[b], lanes_preds[b], gt_lanes_list[b], gt_labels_list[b])
            for b in range(bs)
        ]
        labels = torch.cat([p[0] for p in per])
        targets = torch.cat([p[1] for p in per])
        weights = torch.cat([p[2] for p in per]) * self.code_weights
        num_pos = sum(len(p[3]) for p in per)
        cls_scores = cls_scores.reshape(-1, self.cls_out_channels)
        cls_avg = num_pos * 1.0
        if self.sync_cls_avg_factor:
            cls_avg = reduce_mean(cls_scores.new_tensor([cls_avg]))
        cls_avg = max(float(cls_avg), 1.0)
        loss_cls = self.loss_cls(cls_scores, labels, avg_factor=cls_avg)
        num_total = torch.clamp(reduce_mean(cls_scores.new_tensor([num_pos])), min=1).item()
        lanes_preds = lanes_preds.reshape(-1, self.code_size)
        finite = torch.isfinite(targets).all(-1)
        loss_reg = self.loss_bbox(lanes_preds[finite], targets[finite], weights[finite], avg_factor=num_total)
        assign = [(p[3], p[4]) for p in per]
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_reg), assign

    def loss(
        self,
        preds_dicts: Mapping[str, torch.Tensor],
        gt_lanes_list: Sequence[torch.Tensor],
        gt_labels_list: Sequence[torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], list]:
        """Losses of every decoder layer (the last without a prefix, the others ``d{i}.``)
        and the last layer's ``[(pos_inds, pos_assigned_gt_inds)]`` per sample."""
        all_cls, all_lanes = preds_dicts["all_cls_scores"], preds_dicts["all_lanes_preds"]
        if len(gt_lanes_list) != all_cls.shape[1] or len(gt_labels_list) != all_cls.shape[1]:
            raise ValueError(
                f"LCDeformableDETRHead.loss: {len(gt_lanes_list)} gt_lc / {len(gt_labels_list)} "
                f"labels for a batch of {all_cls.shape[1]}"
            )
        device = all_cls.device
        gts = [gt_lanes_tensor(g, self.code_size, "LCDeformableDETRHead").to(device) for g in gt_lanes_list]
        labels = [torch.as_tensor(lab).long().reshape(-1).to(device) for lab in gt_labels_list]
        for b, (g, lab) in enumerate(zip(gts, labels, strict=True)):
            if len(g) != len(lab):
                raise ValueError(
                    f"LCDeformableDETRHead.loss: sample {b} has {len(g)} lanes, {len(lab)} labels"
                )
        losses: dict[str, torch.Tensor] = {}
        num = all_cls.shape[0]
        assign = None
        for lvl in range(num):
            loss_cls, loss_reg, assign = self.loss_single(all_cls[lvl], all_lanes[lvl], gts, labels)
            prefix = "" if lvl == num - 1 else f"d{lvl}."
            losses[f"{prefix}loss_lane_cls"] = loss_cls
            losses[f"{prefix}loss_lane_reg"] = loss_reg
        return losses, assign

    def get_lanes(self, preds_dicts: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sample ``(lanes (nq, code_size), scores (nq, 1) sigmoid)`` of the last layer."""
        cls = preds_dicts["all_cls_scores"][-1].sigmoid()
        lanes = preds_dicts["all_lanes_preds"][-1]
        return [(lanes[b], cls[b]) for b in range(cls.shape[0])]


__all__ = [
    "CustomDetrTransformerDecoderLayer",
    "attention_cfg",
    "layer_cfg",
    "warn_unused",
    "sequence_args",
    "LCDeformableDETRHead",
    "LaneDetectionTransformerDecoder",
    "LaneHungarianAssigner",
    "LaneL1Cost",
    "PerceptionTransformer",
    "gt_lanes_tensor",
]
