"""``ROAD_BEVFormer`` (driving_openlane_params.md §0) as an mmengine ``BaseModel``: InternImage
+ FPN on the 7 cameras, the BEV constructor, the lane head on the BEV, the traffic-element
head on the front camera's levels, two relationship heads. No temporal input (prev_bev is
always None).

Data contract (the multi-view layout of ``bev_common``): ``inputs['img']`` (B, N, 3, H, W),
or (B, 1, N, 3, H, W) as ``MultiViewDataPreprocessor`` stacks it; each data sample's meta is
``metainfo['img_metas'][-1]`` when present, else ``metainfo`` itself, with ``lidar2img``
(N 4x4), ``img_shape`` (per camera, front view first), ``can_bus`` (18,), ``scale_factor``
(for predict). Ground truth as data fields: ``gt_lc`` (n, 15), ``gt_lc_labels`` (n,),
``gt_te`` (k, 4) pixel xyxy in the resized front view, ``gt_te_labels`` (k,),
``gt_topology_lclc`` (n, n), ``gt_topology_lcte`` (n, k).

``predict`` adds to every data sample ``pred_lc = [lanes (Q, 15), scores (Q, 1)]``,
``pred_te = [det (Q, 5), scores (Q,)]``, ``pred_topology_lclc`` (Q, Q) and
``pred_topology_lcte`` (Q, Q_te), numpy float32 in query order: the arguments of
``submission.format_preds``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from autonomous_driving.bev_common import backbone as _backbone  # noqa: F401  (registers InternImage)

from . import bev_constructor as _bev_constructor  # noqa: F401  (registration)
from . import lane_head as _lane_head  # noqa: F401
from . import relationship_head as _relationship_head  # noqa: F401
from . import te_head as _te_head  # noqa: F401

GT_FIELDS = ("gt_lc", "gt_lc_labels", "gt_te", "gt_te_labels", "gt_topology_lclc", "gt_topology_lcte")
META_FIELDS = ("lidar2img", "img_shape", "can_bus")


def sample_meta(sample: BaseDataElement, b: int) -> dict:
    """The per-frame meta of a data sample (module docstring), checked."""
    info = sample.metainfo
    meta = info["img_metas"][-1] if "img_metas" in info else info
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise KeyError(
            f"ROAD_BEVFormer: data_samples[{b}] meta lacks {missing} (fields present: {sorted(meta)})"
        )
    return dict(meta)


def _gt(sample: BaseDataElement, name: str, b: int) -> torch.Tensor:
    value = getattr(sample, name, None)
    if value is None:
        raise KeyError(f"ROAD_BEVFormer: data_samples[{b}] has no '{name}' data field (needed for the loss)")
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)


@MODELS.register_module()
class ROAD_BEVFormer(BaseModel):  # noqa: N801 (published name)
    """``forward(inputs, data_samples, mode)``: ``'loss'`` -> the loss dict (keys as
    published: ``lane_head.*``, ``lclc_head.loss_rel``, ``bbox_head.*``, ``lcte_head.loss_rel``);
    ``'predict'`` -> the data samples with the predictions; ``'tensor'`` -> the raw outputs."""

    def __init__(
        self,
        *,
        img_backbone: Mapping,
        img_neck: Mapping,
        bev_constructor: Mapping,
        pts_bbox_head: Mapping,
        bbox_head: Mapping,
        lclc_head: Mapping,
        lcte_head: Mapping,
        video_test_mode: bool = False,
        train_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
        data_preprocessor: Mapping | None = None,
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if video_test_mode:
            raise ValueError(
                "ROAD_BEVFormer: video_test_mode=True is not supported (the published model "
                "never uses prev_bev)"
            )
        self.video_test_mode = False
        train_cfg = dict(train_cfg or {})
        self.img_backbone = MODELS.build(dict(img_backbone))
        self.img_neck = MODELS.build(dict(img_neck))
        lane_cfg = dict(pts_bbox_head)
        if "pts" in train_cfg:  # published: train_cfg.pts (its assigner) goes to the lane head
            lane_cfg.setdefault("train_cfg", train_cfg["pts"])
        if test_cfg and "pts" in test_cfg:
            lane_cfg.setdefault("test_cfg", test_cfg["pts"])
        self.pts_bbox_head = MODELS.build(lane_cfg)
        self.bev_constructor = MODELS.build(dict(bev_constructor))
        te_cfg = dict(bbox_head)
        for key in ("bbox", "te"):
            if key in train_cfg:
                te_cfg.setdefault("train_cfg", train_cfg[key])
        self.bbox_head = MODELS.build(te_cfg)
        self.lclc_head = MODELS.build(dict(lclc_head))
        self.lcte_head = MODELS.build(dict(lcte_head))

    # -- features -----------------------------------------------------------------------------

    def extract_img_feat(self, img: torch.Tensor) -> list[torch.Tensor]:
        """FPN levels of (B, N, 3, H, W) images, each (B, N, C, h, w)."""
        batch, num_cams = img.shape[:2]
        feats = self.img_neck(self.img_backbone(img.reshape(batch * num_cams, *img.shape[2:])))
        return [f.view(batch, num_cams, *f.shape[1:]) for f in feats]

    def _check_inputs(self, inputs, data_samples) -> tuple[torch.Tensor, list[dict]]:
        img = inputs.get("img") if isinstance(inputs, Mapping) else inputs
        if not isinstance(img, torch.Tensor):
            raise TypeError(
                f"ROAD_BEVFormer expects inputs={{'img': Tensor (B, N, 3, H, W)}}, got {type(img).__name__}"
            )
        if img.dim() == 6:
            if img.shape[1] != 1:
                raise ValueError(f"ROAD_BEVFormer takes one frame per sample, got a queue of {img.shape[1]}")
            img = img[:, 0]
        if img.dim() != 5 or img.shape[2] != 3:
            raise ValueError(f"inputs['img'] must be (B, N, 3, H, W), got shape {tuple(img.shape)}")
        if data_samples is None or len(data_samples) != img.shape[0]:
            raise ValueError(
                f"ROAD_BEVFormer: data_samples must hold one sample per image ({img.shape[0]}), "
                f"got {None if data_samples is None else len(data_samples)}"
            )
        metas = [sample_meta(s, b) for b, s in enumerate(data_samples)]
        for b, meta in enumerate(metas):
            if len(meta["img_shape"]) != img.shape[1] or len(meta["lidar2img"]) != img.shape[1]:
                raise ValueError(
                    f"ROAD_BEVFormer: data_samples[{b}] has {len(meta['img_shape'])} img_shape / "
                    f"{len(meta['lidar2img'])} lidar2img entries for {img.shape[1]} cameras"
                )
        return img, metas

    @staticmethod
    def _front_metas(img: torch.Tensor, metas: Sequence[Mapping]) -> list[dict]:
        """The TE head's metas: padded input shape, front-view ``img_shape``, ``scale_factor``."""
        out = []
        for meta in metas:
            front = dict(batch_input_shape=tuple(img.shape[-2:]), img_shape=tuple(meta["img_shape"][0][:2]))
            if "scale_factor" in meta:
                front["scale_factor"] = meta["scale_factor"]
            out.append(front)
        return out

    def _forward(self, img: torch.Tensor, metas: list[dict]) -> dict:
        feats = self.extract_img_feat(img)
        bev = self.bev_constructor(feats, metas, None)
        lane_outs = self.pts_bbox_head(feats, bev, metas)
        front = [f[:, 0] for f in feats]
        front_metas = self._front_metas(img, metas)
        te_outs = self.bbox_head(front, front_metas)
        return {"bev": bev, "lane": lane_outs, "te": te_outs, "front_metas": front_metas}

    # -- modes --------------------------------------------------------------------------------

    def forward(self, inputs, data_samples: Sequence[BaseDataElement] | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            img, metas = self._check_inputs(inputs, data_samples)
            return self._forward(img, metas)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs, data_samples: Sequence[BaseDataElement]) -> dict[str, torch.Tensor]:
        img, metas = self._check_inputs(inputs, data_samples)
        gts = {name: [_gt(s, name, b) for b, s in enumerate(data_samples)] for name in GT_FIELDS}
        outs = self._forward(img, metas)
        losses: dict[str, torch.Tensor] = {}
        lane_losses, lane_assign = self.pts_bbox_head.loss(outs["lane"], gts["gt_lc"], gts["gt_lc_labels"])
        losses.update({f"lane_head.{k}": v for k, v in lane_losses.items()})
        lane_feats = outs["lane"]["history_states"]
        lclc = self.lclc_head.forward_train(
            lane_feats, lane_assign, lane_feats, lane_assign, gts["gt_topology_lclc"]
        )
        losses.update({f"lclc_head.{k}": v for k, v in lclc.items()})
        te_losses, te_assign = self.bbox_head.loss(
            outs["te"], gts["gt_te"], gts["gt_te_labels"], outs["front_metas"]
        )
        lcte = self.lcte_head.forward_train(
            lane_feats, lane_assign, outs["te"]["history_states"], te_assign, gts["gt_topology_lcte"]
        )
        # published: a batch without any traffic element keeps the TE and lcte graphs at weight 0
        te_scale = 1.0 if sum(int(torch.as_tensor(g).numel()) for g in gts["gt_te_labels"]) else 0.0
        losses.update({f"bbox_head.{k}": v * te_scale for k, v in te_losses.items()})
        losses.update({f"lcte_head.{k}": v * te_scale for k, v in lcte.items()})
        return losses

    @torch.no_grad()
    def predict(self, inputs, data_samples: Sequence[BaseDataElement]) -> list[BaseDataElement]:
        img, metas = self._check_inputs(inputs, data_samples)
        outs = self._forward(img, metas)
        lanes = self.pts_bbox_head.get_lanes(outs["lane"])
        tes = self.bbox_head.get_bboxes(outs["te"], outs["front_metas"], rescale=True)
        lane_feats = outs["lane"]["history_states"]
        lclc = self.lclc_head.get_relationship(lane_feats, lane_feats)
        lcte = self.lcte_head.get_relationship(lane_feats, outs["te"]["history_states"])

        def np32(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        for b, sample in enumerate(data_samples):
            sample.pred_lc = [np32(lanes[b][0]), np32(lanes[b][1])]
            sample.pred_te = [np32(tes[b][0]), np32(tes[b][1])]
            sample.pred_topology_lclc = np32(lclc[b])
            sample.pred_topology_lcte = np32(lcte[b])
        return list(data_samples)


__all__ = ["GT_FIELDS", "ROAD_BEVFormer", "sample_meta"]
