"""``BEVFormerConstructer``: the BEV features of ROAD_BEVFormer (driving_openlane_params.md §2)
on the shared BEVFormer stack (``bev_common``: encoder, layer, TSA, SCA, MSDA3D, and the BEV
construction ``bev_features.BEVFeaturesMixin.get_bev_features`` the occupancy transformer
uses too: CAN-bus MLP, camera / level embeddings, token flattening, encoder call).

What differs from the occupancy BEVFormer (§2.4) and how it is met here:

- the BEV query embedding and the learned positional encoding live in this module
  (``bev_embedding``, ``positional_encoding``);
- the projection is ``lidar2img`` alone (ego = "lidar"): encoder option
  ``projection='lidar2img'``;
- the projected points are normalised by ``img_metas[b]['img_shape'][0]``, the resized front
  view before padding, for every camera (published quirk kept: it defines what a checkpoint
  computes): encoder option ``image_size='front_img_shape'``;
- [quirk kept] TSA applies ``value_proj`` twice: TSA option ``double_value_proj=True``;
  parameter names are unchanged;
- ``prev_bev`` is always None (``video_test_mode=False``): the published shift is computed
  but unused, so the encoder gets a zero shift (the shared encoder would move ``ref_2d`` by
  it in place, the occupancy quirk; the published ROAD code clones).

The three options are :data:`ENCODER_OPTIONS` / :data:`TSA_OPTIONS`; the configs set them
and the constructor fills them in where an encoder config leaves them out (a config may
still set them otherwise, explicitly).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from autonomous_driving.bev_common import attention as _attention  # noqa: F401  (registers TSA, SCA, MSDA3D)
from autonomous_driving.bev_common import encoder as _encoder  # noqa: F401  (registers BEVFormerEncoder/Layer)
from autonomous_driving.bev_common.attention import (
    CustomMSDeformableAttention,
    MSDeformableAttention3D,
    TemporalSelfAttention,
    in_mmdet_scope,
)
from autonomous_driving.bev_common.bev_features import BEVFeaturesMixin, build_can_bus_mlp, can_bus_array

PC_RANGE = (-51.2, -25.6, -2.3, 51.2, 25.6, 1.7)


ENCODER_OPTIONS = {"projection": "lidar2img", "image_size": "front_img_shape"}
TSA_OPTIONS = {"double_value_proj": True}


def openlane_encoder_cfg(encoder: Mapping) -> dict:
    """A copy of the ``BEVFormerEncoder`` config with the OpenLane-V2 options
    (:data:`ENCODER_OPTIONS` on the encoder, :data:`TSA_OPTIONS` on every
    ``TemporalSelfAttention``) filled in where the config does not set them."""
    if not isinstance(encoder, Mapping):
        raise TypeError(f"BEVFormerConstructer: encoder must be a config dict, got {encoder!r}")
    cfg = copy.deepcopy(dict(encoder))
    for key, value in ENCODER_OPTIONS.items():
        cfg.setdefault(key, value)
    layers = cfg.get("transformerlayers")
    for layer in layers if isinstance(layers, (list, tuple)) else [layers]:
        if not isinstance(layer, Mapping):
            continue  # the encoder reports a malformed transformerlayers itself
        attns = layer.get("attn_cfgs", [])
        for attn in attns if isinstance(attns, (list, tuple)) else [attns]:
            if not isinstance(attn, Mapping):
                continue
            is_tsa = attn.get("type") in ("TemporalSelfAttention", TemporalSelfAttention)
            if is_tsa:
                for key, value in TSA_OPTIONS.items():
                    attn.setdefault(key, value)
    return cfg


@MODELS.register_module()
class BEVFormerConstructer(BEVFeaturesMixin, BaseModule):  # published spelling
    """``forward(mlvl_feats, img_metas, prev_bev=None)``: camera features (list over levels
    of (B, N, C, h, w)) -> BEV features (B, bev_h·bev_w, C), query ``k = row·bev_w + col``."""

    def __init__(
        self,
        *,
        num_feature_levels: int = 4,
        num_cams: int = 6,
        embed_dims: int = 256,
        bev_h: int = 100,
        bev_w: int = 200,
        pc_range: Sequence[float] = PC_RANGE,
        rotate_center: Sequence[float] = (50, 100),
        rotate_prev_bev: bool = True,
        use_shift: bool = True,
        use_can_bus: bool = True,
        can_bus_norm: bool = True,
        use_cams_embeds: bool = True,
        encoder: Mapping,
        positional_encoding: Mapping,
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(pc_range) != 6:
            raise ValueError(f"BEVFormerConstructer: pc_range must hold 6 numbers, got {pc_range!r}")
        if len(rotate_center) != 2:
            raise ValueError(f"BEVFormerConstructer: rotate_center must be (x, y), got {rotate_center!r}")
        self.num_feature_levels = num_feature_levels
        self.num_cams = num_cams
        self.embed_dims = embed_dims
        self.bev_h, self.bev_w = bev_h, bev_w
        self.pc_range = [float(v) for v in pc_range]
        self.real_w = self.pc_range[3] - self.pc_range[0]
        self.real_h = self.pc_range[4] - self.pc_range[1]
        self.rotate_center = [float(c) for c in rotate_center]
        self.rotate_prev_bev = rotate_prev_bev
        self.use_shift = use_shift
        self.use_can_bus = use_can_bus
        self.can_bus_norm = can_bus_norm
        self.use_cams_embeds = use_cams_embeds
        # parameter names of §2.1 (bev_embedding, level/cams embeds, encoder, can_bus_mlp, pos enc)
        self.bev_embedding = nn.Embedding(bev_h * bev_w, embed_dims)
        self.level_embeds = nn.Parameter(torch.randn(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.randn(num_cams, embed_dims))
        self.encoder = MODELS.build(in_mmdet_scope(openlane_encoder_cfg(encoder)))
        if getattr(self.encoder, "embed_dims", embed_dims) != embed_dims:
            raise ValueError(
                f"BEVFormerConstructer: the encoder has embed_dims={self.encoder.embed_dims}, "
                f"the constructor {embed_dims}"
            )
        self.can_bus_mlp = build_can_bus_mlp(embed_dims, can_bus_norm)
        self.positional_encoding = MODELS.build(in_mmdet_scope(positional_encoding))

    def init_weights(self) -> None:
        """§2.1: xavier on every >1-D parameter (BEV embedding and positional encoding
        included), the deformable re-inits, N(0, 1) level/camera embeddings. The published
        ``xavier_init(can_bus_mlp)`` on a Sequential is a no-op (mmcv initialises only a
        module's own ``weight``/``bias``), so the can_bus_mlp biases keep PyTorch's default,
        as in the occupancy copy."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, (MSDeformableAttention3D, TemporalSelfAttention, CustomMSDeformableAttention)):
                m.init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)
        self._is_init = True

    def published_shift(self, img_metas: Sequence[Mapping]) -> np.ndarray:
        """(B, 2) the shift the published code computes from the absolute ``can_bus`` (x, y
        translation and yaw) and then leaves unused (no prev_bev); kept for inspection."""
        can_bus = can_bus_array(img_metas)
        grid_y, grid_x = self.real_h / self.bev_h, self.real_w / self.bev_w
        length = np.hypot(can_bus[:, 0], can_bus[:, 1])
        bev_angle = np.degrees(can_bus[:, -2]) - np.degrees(np.arctan2(can_bus[:, 1], can_bus[:, 0]))
        shift_y = length * np.cos(np.radians(bev_angle)) / grid_y / self.bev_h * self.use_shift
        shift_x = length * np.sin(np.radians(bev_angle)) / grid_x / self.bev_w * self.use_shift
        return np.stack([shift_x, shift_y], 1)

    def compute_shift(self, img_metas, grid_length, bev_h, bev_w, *, dtype, device) -> torch.Tensor:
        """What ``get_bev_features`` hands the encoder: zero (see the module docstring);
        overrides ``BEVFeaturesMixin.compute_shift``."""
        return torch.zeros(len(img_metas), 2, dtype=dtype, device=device)

    def forward(
        self,
        mlvl_feats: Sequence[torch.Tensor],
        img_metas: Sequence[Mapping],
        prev_bev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if prev_bev is not None:
            raise ValueError(
                "BEVFormerConstructer: prev_bev must be None (ROAD_BEVFormer has no temporal input: "
                "video_test_mode=False and the can_bus is absolute)"
            )
        if not isinstance(mlvl_feats, Sequence) or not mlvl_feats:
            raise ValueError("BEVFormerConstructer: mlvl_feats must be a list of (B, N, C, h, w) levels")
        bs = mlvl_feats[0].shape[0]
        dtype, device = mlvl_feats[0].dtype, mlvl_feats[0].device
        bev_queries = self.bev_embedding.weight.to(dtype)
        mask = torch.zeros((bs, self.bev_h, self.bev_w), device=device, dtype=dtype)
        bev_pos = self.positional_encoding(mask).to(dtype)  # (B, C, bev_h, bev_w), col channels first
        grid_length = (self.real_h / self.bev_h, self.real_w / self.bev_w)
        return self.get_bev_features(
            mlvl_feats,
            bev_queries,
            self.bev_h,
            self.bev_w,
            grid_length=grid_length,
            bev_pos=bev_pos,
            img_metas=img_metas,
            prev_bev=None,
        )


__all__ = ["ENCODER_OPTIONS", "TSA_OPTIONS", "BEVFormerConstructer", "openlane_encoder_cfg"]
