"""The traffic-element head of ROAD_BEVFormer (driving_openlane_params.md §4):
``TEDeformableDETRHead`` = Deformable DETR with box refinement (not two-stage) on the front
camera's FPN levels, with the mmdet 2.x parameter names of the published checkpoint
(``transformer.level_embeds``, ``transformer.reference_points``,
``transformer.encoder.layers.{e}.attentions.0``, ``...ffns.0``, ``...norms``).

mmdet 3.3's ``DeformableDetrTransformer{Encoder,Decoder}`` layers name their children
``self_attn`` / ``ffn`` / ``cross_attn``, so the layers here are mmcv's
``BaseTransformerLayer`` (the bricks mmdet 2.x built them from, mmcv's
``MultiScaleDeformableAttention`` on the ``use_ops_dcnv3_msda`` path); from mmdet 3.3 come the
encoder reference points, the valid ratios, the sine positional encoding, the Hungarian
assigner with its match costs, the losses and the box conversions.

Published defect fixed (switchable): ``rescale`` divided x and y by the scalar
``scale_factor[0]`` (= w_scale of ``ResizeFrontView``); here each axis is divided by its own
factor, the inverse of the resize. ``published_rescale=True`` restores the scalar."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import BaseTransformerLayer, TransformerLayerSequence
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.detectors.deformable_detr import DeformableDETR
from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder, inverse_sigmoid
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob, constant_init, xavier_init
from mmengine.structures import InstanceData
from torch import nn

from autonomous_driving.bev_common.attention import in_mmdet_scope

from .lane_head import sequence_args, warn_unused


@MODELS.register_module()
class DetrTransformerDecoderLayer(BaseTransformerLayer):
    """mmdet 2.x ``DetrTransformerDecoderLayer``: an mmcv ``BaseTransformerLayer`` (the
    sequences convert its mmcv-1.x arguments, ``lane_head.layer_cfg``)."""


@MODELS.register_module()
class DetrTransformerEncoder(TransformerLayerSequence):
    """mmdet 2.x ``DetrTransformerEncoder`` (no final norm with post-norm layers): runs the
    layers with every keyword (reference points, spatial shapes, padding mask)."""

    def __init__(self, *args, post_norm_cfg: Mapping | None = None, **kwargs) -> None:
        args, kwargs = sequence_args(args, kwargs, type(self).__name__)
        super().__init__(*args, **kwargs)
        if post_norm_cfg is not None:
            raise ValueError(
                "DetrTransformerEncoder: post_norm_cfg is not supported (the published "
                "config has post-norm layers and no final norm)"
            )

    def forward(self, query: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, *args, **kwargs)
        return query


@MODELS.register_module()
class DeformableDetrTransformerDecoder(TransformerLayerSequence):
    """mmdet 2.x decoder with box refinement: ``forward(query (nq, B, C), ..., reference_points
    (B, nq, 2|4), valid_ratios (B, L, 2), reg_branches=)`` -> ``(states (L, nq, B, C),
    references (L, B, nq, 2|4))``."""

    def __init__(self, *args, return_intermediate: bool = False, **kwargs) -> None:
        args, kwargs = sequence_args(args, kwargs, type(self).__name__)
        super().__init__(*args, **kwargs)
        self.return_intermediate = return_intermediate

    def forward(
        self,
        query: torch.Tensor,
        *args,
        reference_points: torch.Tensor,
        valid_ratios: torch.Tensor,
        reg_branches: nn.ModuleList | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output = query
        intermediate, intermediate_refs = [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_input = (
                    reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
                )
            elif reference_points.shape[-1] == 2:
                ref_input = reference_points[:, :, None] * valid_ratios[:, None]
            else:
                raise ValueError(
                    f"DeformableDetrTransformerDecoder: reference_points last dim must be 2 or "
                    f"4, got {reference_points.shape[-1]}"
                )
            output = layer(output, *args, reference_points=ref_input, **kwargs)
            if reg_branches is not None:
                tmp = reg_branches[lid](output.permute(1, 0, 2))
                if reference_points.shape[-1] == 4:
                    new = tmp + inverse_sigmoid(reference_points)
                else:
                    new = torch.cat([tmp[..., :2] + inverse_sigmoid(reference_points), tmp[..., 2:]], -1)
                reference_points = new.sigmoid().detach()
            if self.return_intermediate:
                intermediate.append(output)
                intermediate_refs.append(reference_points)
        if self.return_intermediate:
            return torch.stack(intermediate), torch.stack(intermediate_refs)
        return output[None], reference_points[None]


@MODELS.register_module()
class DeformableDetrTransformer(BaseModule):
    """mmdet 2.x ``DeformableDetrTransformer`` (``as_two_stage=False``): ``level_embeds``,
    ``reference_points`` Linear(C, 2), ``encoder``, ``decoder``."""

    def __init__(
        self,
        *,
        encoder: Mapping,
        decoder: Mapping,
        as_two_stage: bool = False,
        num_feature_levels: int = 4,
        two_stage_num_proposals: int = 300,
        init_cfg: Mapping | None = None,
        **kwargs,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        warn_unused("DeformableDetrTransformer", kwargs)
        if as_two_stage:
            raise ValueError(
                "DeformableDetrTransformer: as_two_stage=True is not implemented "
                "(the published TE head is single-stage)"
            )
        self.as_two_stage = False
        self.num_feature_levels = num_feature_levels
        self.two_stage_num_proposals = two_stage_num_proposals  # unused, as published
        self.encoder = MODELS.build(in_mmdet_scope(encoder))
        self.decoder = MODELS.build(in_mmdet_scope(decoder))
        self.embed_dims = self.encoder.embed_dims
        self.level_embeds = nn.Parameter(torch.randn(num_feature_levels, self.embed_dims))
        self.reference_points = nn.Linear(self.embed_dims, 2)

    def init_weights(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()
        xavier_init(self.reference_points, distribution="uniform", bias=0.0)
        nn.init.normal_(self.level_embeds)
        self._is_init = True

    def forward(
        self,
        mlvl_feats: Sequence[torch.Tensor],
        mlvl_masks: Sequence[torch.Tensor],
        query_embed: torch.Tensor,
        mlvl_pos_embeds: Sequence[torch.Tensor],
        reg_branches: nn.ModuleList | None = None,
        **kwargs,
    ):
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(
                f"DeformableDetrTransformer: {len(mlvl_feats)} feature levels, "
                f"num_feature_levels={self.num_feature_levels}"
            )
        feat_flatten, mask_flatten, pos_flatten, shapes = [], [], [], []
        for lvl, (feat, mask, pos) in enumerate(zip(mlvl_feats, mlvl_masks, mlvl_pos_embeds, strict=True)):
            shapes.append(feat.shape[-2:])
            feat_flatten.append(feat.flatten(2).transpose(1, 2))
            mask_flatten.append(mask.flatten(1))
            pos_flatten.append(pos.flatten(2).transpose(1, 2) + self.level_embeds[lvl].view(1, 1, -1))
        feat_flatten = torch.cat(feat_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 1)
        device = feat_flatten.device
        spatial_shapes = torch.as_tensor([tuple(s) for s in shapes], dtype=torch.long, device=device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([DeformableDETR.get_valid_ratio(m) for m in mlvl_masks], 1)
        enc_ref = DeformableDetrTransformerEncoder.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device
        )
        memory = self.encoder(
            query=feat_flatten.permute(1, 0, 2),
            key=None,
            value=None,
            query_pos=pos_flatten.permute(1, 0, 2),
            query_key_padding_mask=mask_flatten,
            spatial_shapes=spatial_shapes,
            reference_points=enc_ref,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            **kwargs,
        )
        bs = feat_flatten.shape[0]
        query_pos, query = torch.split(query_embed, self.embed_dims, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(bs, -1, -1)
        query = query.unsqueeze(0).expand(bs, -1, -1)
        reference_points = self.reference_points(query_pos).sigmoid()
        states, inter_refs = self.decoder(
            query=query.permute(1, 0, 2),
            key=None,
            value=memory,
            query_pos=query_pos.permute(1, 0, 2),
            key_padding_mask=mask_flatten,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            reg_branches=reg_branches,
            **kwargs,
        )
        return states, reference_points, inter_refs


def hungarian_assigner(cfg: Mapping) -> object:
    """mmdet 3's ``HungarianAssigner``; the mmdet 2.x form (``cls_cost``, ``reg_cost``,
    ``iou_cost``) of the published config is turned into ``match_costs``."""
    cfg = dict(cfg)
    if any(k in cfg for k in ("cls_cost", "reg_cost", "iou_cost")):
        costs = [dict(cfg.pop(k)) for k in ("cls_cost", "reg_cost", "iou_cost") if k in cfg]
        cfg["match_costs"] = costs
    return TASK_UTILS.build(cfg)


def _front_shapes(img_metas: Sequence[Mapping]) -> list[tuple[int, int]]:
    out = []
    for b, meta in enumerate(img_metas):
        if "img_shape" not in meta:
            raise KeyError(f"TEDeformableDETRHead: img_metas[{b}] has no 'img_shape' (the front view (h, w))")
        shape = meta["img_shape"]
        out.append((int(shape[0]), int(shape[1])))
    return out


@MODELS.register_module()
class TEDeformableDETRHead(BaseModule):
    """``forward(mlvl_feats (list of (B, C, h, w), camera 0), img_metas)`` with per-sample
    ``batch_input_shape`` (padded H, W), ``img_shape`` (front view h, w) ->
    ``{'all_cls_scores' (L, B, nq, K), 'all_bbox_preds' (L, B, nq, 4) normalised cxcywh,
    'history_states' (L, B, nq, C)}``."""

    def __init__(
        self,
        *,
        num_classes: int = 13,
        in_channels: int = 256,
        num_query: int = 100,
        num_reg_fcs: int = 2,
        sync_cls_avg_factor: bool = True,
        with_box_refine: bool = True,
        as_two_stage: bool = False,
        transformer: Mapping,
        positional_encoding: Mapping = dict(
            type="SinePositionalEncoding", num_feats=128, normalize=True, offset=-0.5
        ),
        loss_cls: Mapping = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox: Mapping = dict(type="L1Loss", loss_weight=2.5),
        loss_iou: Mapping = dict(type="GIoULoss", loss_weight=1.0),
        train_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
        published_rescale: bool = False,
        init_cfg: Mapping | None = None,
        **kwargs,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        warn_unused("TEDeformableDETRHead", kwargs)
        if as_two_stage:
            raise ValueError("TEDeformableDETRHead: as_two_stage=True is not implemented")
        if not dict(loss_cls).get("use_sigmoid", False):
            raise ValueError("TEDeformableDETRHead: loss_cls must be a sigmoid loss (use_sigmoid=True)")
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.embed_dims = in_channels
        self.num_query = num_query
        self.num_reg_fcs = num_reg_fcs
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.with_box_refine = with_box_refine
        self.as_two_stage = False
        self.published_rescale = published_rescale
        self.train_cfg, self.test_cfg = train_cfg, test_cfg  # test_cfg.max_per_img ignored (published)
        assigner = (train_cfg or {}).get(
            "assigner",
            dict(
                type="HungarianAssigner",
                match_costs=[
                    dict(type="FocalLossCost", weight=1.0),
                    dict(type="BBoxL1Cost", weight=2.5, box_format="xywh"),
                    dict(type="IoUCost", iou_mode="giou", weight=1.0),
                ],
            ),
        )
        self.assigner = hungarian_assigner(assigner)
        self.loss_cls = MODELS.build(dict(loss_cls))
        self.loss_bbox = MODELS.build(dict(loss_bbox))
        self.loss_iou = MODELS.build(dict(loss_iou))
        self.positional_encoding = MODELS.build(dict(positional_encoding))
        self.transformer = MODELS.build(in_mmdet_scope(transformer))
        if self.transformer.embed_dims != in_channels:
            raise ValueError(
                f"TEDeformableDETRHead: transformer embed_dims {self.transformer.embed_dims} != "
                f"in_channels {in_channels}"
            )
        num_pred = self.transformer.decoder.num_layers
        cls = nn.Linear(self.embed_dims, self.cls_out_channels)
        reg_layers: list[nn.Module] = []
        for _ in range(num_reg_fcs):
            reg_layers += [nn.Linear(self.embed_dims, self.embed_dims), nn.ReLU()]
        reg_layers.append(nn.Linear(self.embed_dims, 4))
        reg = nn.Sequential(*reg_layers)
        if with_box_refine:
            self.cls_branches = nn.ModuleList([copy.deepcopy(cls) for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([copy.deepcopy(reg) for _ in range(num_pred)])
        else:
            self.cls_branches = nn.ModuleList([cls for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([reg for _ in range(num_pred)])
        self.query_embedding = nn.Embedding(num_query, self.embed_dims * 2)

    def init_weights(self) -> None:
        self.transformer.init_weights()
        bias = bias_init_with_prob(0.01)
        for m in self.cls_branches:
            nn.init.constant_(m.bias, bias)
        for m in self.reg_branches:
            constant_init(m[-1], 0, bias=0)
        nn.init.constant_(self.reg_branches[0][-1].bias.data[2:], -2.0)
        self._is_init = True

    def forward(self, mlvl_feats: Sequence[torch.Tensor], img_metas: Sequence[Mapping]) -> dict:
        bs = mlvl_feats[0].shape[0]
        if len(img_metas) != bs:
            raise ValueError(f"TEDeformableDETRHead: {len(img_metas)} img_metas for a batch of {bs}")
        pad_h, pad_w = (int(v) for v in img_metas[0]["batch_input_shape"])
        masks = mlvl_feats[0].new_ones((bs, pad_h, pad_w))
        for b, (h, w) in enumerate(_front_shapes(img_metas)):
            masks[b, :h, :w] = 0
        mlvl_masks, mlvl_pos = [], []
        for feat in mlvl_feats:
            mask = F.interpolate(masks[None], size=feat.shape[-2:]).to(torch.bool)[0]
            mlvl_masks.append(mask)
            mlvl_pos.append(self.positional_encoding(mask).to(feat.dtype))
        states, init_reference, inter_refs = self.transformer(
            mlvl_feats,
            mlvl_masks,
            self.query_embedding.weight.to(mlvl_feats[0].dtype),
            mlvl_pos,
            reg_branches=self.reg_branches if self.with_box_refine else None,
        )
        states = states.permute(0, 2, 1, 3)
        all_cls, all_boxes = [], []
        for lvl in range(states.shape[0]):
            reference = inverse_sigmoid(init_reference if lvl == 0 else inter_refs[lvl - 1])
            cls = self.cls_branches[lvl](states[lvl])
            tmp = self.reg_branches[lvl](states[lvl])
            if reference.shape[-1] == 4:
                tmp = tmp + reference
            else:
                tmp = torch.cat([tmp[..., :2] + reference, tmp[..., 2:]], -1)
            all_cls.append(cls)
            all_boxes.append(tmp.sigmoid())
        return {
            "all_cls_scores": torch.stack(all_cls),
            "all_bbox_preds": torch.stack(all_boxes),
            "history_states": states,
        }

    # -- loss ---------------------------------------------------------------------------------

    def _targets(
        self,
        cls: torch.Tensor,
        boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        img_shape: tuple[int, int],
    ):
        h, w = img_shape
        factor = boxes.new_tensor([w, h, w, h])[None]
        pred = InstanceData(scores=cls, bboxes=bbox_cxcywh_to_xyxy(boxes) * factor)
        gt = InstanceData(bboxes=gt_boxes, labels=gt_labels)
        result = self.assigner.assign(pred_instances=pred, gt_instances=gt, img_meta={"img_shape": (h, w)})
        pos = torch.nonzero(result.gt_inds > 0, as_tuple=False).squeeze(-1)
        pos_gt = result.gt_inds[pos] - 1
        labels = boxes.new_full((boxes.shape[0],), self.num_classes, dtype=torch.long)
        labels[pos] = gt_labels[pos_gt]
        targets = torch.zeros_like(boxes)
        weights = torch.zeros_like(boxes)
        if len(pos):
            targets[pos] = bbox_xyxy_to_cxcywh(gt_boxes[pos_gt] / factor)
            weights[pos] = 1.0
        return labels, targets, weights, pos, pos_gt, factor.expand(boxes.shape[0], 4)

    def loss_single(self, cls_scores, bbox_preds, gt_boxes_list, gt_labels_list, img_shapes):
        bs = cls_scores.shape[0]
        per = [
            self._targets(cls_scores[b], bbox_preds[b], gt_boxes_list[b], gt_labels_list[b], img_shapes[b])
            for b in range(bs)
        ]
        labels = torch.cat([p[0] for p in per])
        targets = torch.cat([p[1] for p in per])
        weights = torch.cat([p[2] for p in per])
        factors = torch.cat([p[5] for p in per])
        num_pos = sum(len(p[3]) for p in per)
        cls_scores = cls_scores.reshape(-1, self.cls_out_channels)
        cls_avg = cls_scores.new_tensor([num_pos * 1.0])
        if self.sync_cls_avg_factor:
            cls_avg = reduce_mean(cls_avg)
        cls_avg = max(float(cls_avg), 1.0)
        loss_cls = self.loss_cls(cls_scores, labels, avg_factor=cls_avg)
        num_total = torch.clamp(reduce_mean(cls_scores.new_tensor([num_pos])), min=1).item()
        bbox_preds = bbox_preds.reshape(-1, 4)
        boxes = bbox_cxcywh_to_xyxy(bbox_preds) * factors
        boxes_gt = bbox_cxcywh_to_xyxy(targets) * factors
        loss_iou = self.loss_iou(boxes, boxes_gt, weights, avg_factor=num_total)
        loss_bbox = self.loss_bbox(bbox_preds, targets, weights, avg_factor=num_total)
        return loss_cls, loss_bbox, loss_iou, [(p[3], p[4]) for p in per]

    def loss(
        self,
        preds_dicts: Mapping[str, torch.Tensor],
        gt_boxes_list: Sequence[torch.Tensor],
        gt_labels_list: Sequence[torch.Tensor],
        img_metas: Sequence[Mapping],
    ):
        """Losses of every decoder layer (``d{i}.`` for all but the last) and the last
        layer's ``[(pos_inds, pos_assigned_gt_inds)]`` per sample. ``gt_boxes`` are pixel
        xyxy in the resized front view."""
        all_cls, all_boxes = preds_dicts["all_cls_scores"], preds_dicts["all_bbox_preds"]
        device = all_cls.device
        gts = [torch.as_tensor(g, dtype=torch.float32).reshape(-1, 4).to(device) for g in gt_boxes_list]
        labels = [torch.as_tensor(lab).long().reshape(-1).to(device) for lab in gt_labels_list]
        for b, (g, lab) in enumerate(zip(gts, labels, strict=True)):
            if len(g) != len(lab):
                raise ValueError(
                    f"TEDeformableDETRHead.loss: sample {b} has {len(g)} boxes, {len(lab)} labels"
                )
            if len(lab) and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise ValueError(
                    f"TEDeformableDETRHead.loss: sample {b} labels must be 0..{self.num_classes - 1}"
                )
        shapes = _front_shapes(img_metas)
        losses: dict[str, torch.Tensor] = {}
        num = all_cls.shape[0]
        assign = None
        for lvl in range(num):
            loss_cls, loss_bbox, loss_iou, assign = self.loss_single(
                all_cls[lvl], all_boxes[lvl], gts, labels, shapes
            )
            prefix = "" if lvl == num - 1 else f"d{lvl}."
            losses[f"{prefix}loss_cls"] = loss_cls
            losses[f"{prefix}loss_bbox"] = loss_bbox
            losses[f"{prefix}loss_iou"] = loss_iou
        return losses, assign

    def get_bboxes(
        self, preds_dicts: Mapping[str, torch.Tensor], img_metas: Sequence[Mapping], rescale: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sample ``(det (nq, 5) = pixel xyxy + label, scores (nq,))``, all queries, in
        query order; ``rescale`` maps back through ``scale_factor`` (module docstring)."""
        cls = preds_dicts["all_cls_scores"][-1].sigmoid()
        boxes_all = preds_dicts["all_bbox_preds"][-1]
        out = []
        for b, (h, w) in enumerate(_front_shapes(img_metas)):
            scores, labels = cls[b].max(-1)
            boxes = bbox_cxcywh_to_xyxy(boxes_all[b])
            boxes = boxes * boxes.new_tensor([w, h, w, h])
            boxes[:, 0::2].clamp_(min=0, max=w)
            boxes[:, 1::2].clamp_(min=0, max=h)
            if rescale:
                if "scale_factor" not in img_metas[b]:
                    raise KeyError(
                        f"TEDeformableDETRHead.get_bboxes: rescale needs img_metas[{b}]['scale_factor']"
                    )
                factor = np.asarray(img_metas[b]["scale_factor"], dtype=np.float32).reshape(-1)
                if self.published_rescale:
                    factor = np.full(4, factor[0], dtype=np.float32)
                elif factor.size == 2:
                    factor = np.tile(factor, 2)
                elif factor.size == 1:
                    factor = np.repeat(factor, 4)
                boxes = boxes / boxes.new_tensor(factor)
            out.append((torch.cat([boxes, labels[:, None].to(boxes.dtype)], -1), scores))
        return out


__all__ = [
    "DeformableDetrTransformer",
    "DeformableDetrTransformerDecoder",
    "DetrTransformerDecoderLayer",
    "DetrTransformerEncoder",
    "TEDeformableDETRHead",
    "hungarian_assigner",
]
