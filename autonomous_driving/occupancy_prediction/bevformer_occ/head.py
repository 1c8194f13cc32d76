"""``BEVFormerOccHead``: BEV queries + learned positional encoding into ``TransformerOcc``,
and the published occupancy loss (spec: driving_occupancy_params.md §3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

# Keys the published config hands the head that no occupancy code reads (the detection
# head's leftovers). They are accepted and dropped; any other unknown key is an error.
_DEAD_CONFIG_KEYS = frozenset({
    "num_query", "in_channels", "sync_cls_avg_factor", "code_size", "code_weights", "bbox_coder",
    "loss_cls", "loss_bbox", "loss_iou", "train_cfg", "test_cfg", "num_reg_fcs",
})


@MODELS.register_module()
class BEVFormerOccHead(BaseModule):
    """Occupancy head: ``forward`` returns the BEV features only (``only_bev``) or
    ``{'bev_embed': (bs, C, Hb, Wb), 'occ': (bs, Wb, Hb, Z, num_classes) logits}``."""

    def __init__(self, *, transformer: Mapping, positional_encoding: Mapping, loss_occ: Mapping,
                 pc_range: Sequence[float], bev_h: int = 30, bev_w: int = 30, num_classes: int = 18,
                 use_mask: bool = False, with_box_refine: bool = False, as_two_stage: bool = False,
                 init_cfg: Mapping | None = None, **kwargs) -> None:
        unknown = sorted(set(kwargs) - _DEAD_CONFIG_KEYS)
        if unknown:
            raise TypeError(f"BEVFormerOccHead got unexpected arguments {unknown}")
        super().__init__(init_cfg=init_cfg)
        if len(pc_range) != 6:
            raise ValueError(f"pc_range must be [x0, y0, z0, x1, y1, z1], got {pc_range!r}")
        self.bev_h, self.bev_w = int(bev_h), int(bev_w)
        self.num_classes = num_classes
        self.use_mask = use_mask
        self.with_box_refine = with_box_refine  # unused by the occupancy forward, as published
        self.as_two_stage = as_two_stage
        self.pc_range = [float(v) for v in pc_range]
        self.real_w = self.pc_range[3] - self.pc_range[0]
        self.real_h = self.pc_range[4] - self.pc_range[1]
        # Build order = published key order: loss (no parameters), positional encoding,
        # transformer, then the BEV queries.
        self.loss_occ = MODELS.build(loss_occ)
        self.positional_encoding = MODELS.build(positional_encoding)
        self.transformer = MODELS.build(transformer)
        self.embed_dims = self.transformer.embed_dims
        if self.transformer.num_classes != num_classes:
            raise ValueError(f"num_classes ({num_classes}) differs from the transformer's "
                             f"({self.transformer.num_classes})")
        self.bev_embedding = nn.Embedding(self.bev_h * self.bev_w, self.embed_dims)

    def init_weights(self) -> None:
        """Published override: only the transformer is initialised, so ``bev_embedding`` and
        the positional encoding keep PyTorch's N(0, 1) (mmdet's Uniform init_cfg of
        LearnedPositionalEncoding is never applied)."""
        self.transformer.init_weights()

    @property
    def grid_length(self) -> tuple[float, float]:
        """(y, x) metres per BEV cell."""
        return self.real_h / self.bev_h, self.real_w / self.bev_w

    def forward(self, mlvl_feats: Sequence[torch.Tensor], img_metas: Sequence[Mapping],
                prev_bev: torch.Tensor | None = None, only_bev: bool = False,
                test: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """``mlvl_feats``: list over levels of (bs, N, C, h, w). ``test`` is accepted for the
        published signature; the forward is the same in both modes."""
        bs = mlvl_feats[0].size(0)
        dtype = mlvl_feats[0].dtype
        bev_queries = self.bev_embedding.weight.to(dtype)
        bev_mask = torch.zeros((bs, self.bev_h, self.bev_w), device=bev_queries.device, dtype=dtype)
        bev_pos = self.positional_encoding(bev_mask).to(dtype)
        if only_bev:
            return self.transformer.get_bev_features(
                mlvl_feats, bev_queries, self.bev_h, self.bev_w, grid_length=self.grid_length,
                bev_pos=bev_pos, img_metas=img_metas, prev_bev=prev_bev)
        bev_embed, occ = self.transformer(
            mlvl_feats, bev_queries, None, self.bev_h, self.bev_w, grid_length=self.grid_length,
            bev_pos=bev_pos, img_metas=img_metas, prev_bev=prev_bev)
        return {"bev_embed": bev_embed, "occ": occ}

    def loss(self, voxel_semantics: torch.Tensor, mask_camera: torch.Tensor | None,
             preds_dicts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{'loss_occ'}``: cross-entropy over all voxels, or (``use_mask``) weighted by
        ``mask_camera`` and averaged over its sum. Computed in float32 (the published
        ``force_fp32``)."""
        preds = preds_dicts["occ"]
        if voxel_semantics.shape != preds.shape[:-1]:
            raise ValueError(f"voxel_semantics {tuple(voxel_semantics.shape)} does not match the "
                             f"predicted grid {tuple(preds.shape[:-1])} (bs, X, Y, Z)")
        labels = voxel_semantics.long()
        if labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes - 1):
            raise ValueError(f"voxel_semantics must hold labels in [0, {self.num_classes - 1}], "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
        return {"loss_occ": self.loss_single(labels, mask_camera, preds)}

    def loss_single(self, voxel_semantics: torch.Tensor, mask_camera: torch.Tensor | None,
                    preds: torch.Tensor) -> torch.Tensor:
        labels = voxel_semantics.reshape(-1)
        logits = preds.float().reshape(-1, self.num_classes)
        if not self.use_mask:
            return self.loss_occ(logits, labels)
        if mask_camera is None:
            raise ValueError("use_mask=True needs mask_camera")
        if mask_camera.shape != voxel_semantics.shape:
            raise ValueError(f"mask_camera {tuple(mask_camera.shape)} does not match voxel_semantics "
                             f"{tuple(voxel_semantics.shape)}")
        weight = mask_camera.reshape(-1).float()
        return self.loss_occ(logits, labels, weight, avg_factor=weight.sum())

    @torch.no_grad()
    def get_occ(self, preds_dicts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class indices (bs, Wb, Hb, Z), int64: softmax then argmax, as published."""
        return preds_dicts["occ"].float().softmax(-1).argmax(-1)


__all__ = ["BEVFormerOccHead"]
