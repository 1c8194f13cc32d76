"""``TransformerOcc``: the BEVFormer encoder turned into an occupancy volume.

The BEV queries see the cameras through the encoder (``get_bev_features``: CAN-bus shift,
previous-BEV rotation, CAN-bus MLP, camera/level embeddings); the BEV features
(bs, C, Hb, Wb) are then read as (bs, C/pillar_h, pillar_h, Hb, Wb), decoded by two Conv3d
blocks and classified per voxel by ``predicter``. Names, order and initialisation follow the
published module (spec: driving_occupancy_params.md §0, §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn
from torchvision.transforms import InterpolationMode


def _require(metas: Sequence[Mapping], field: str) -> list:
    """``field`` of every per-sample meta, with an error naming the sample that lacks it."""
    values = []
    for b, meta in enumerate(metas):
        if field not in meta:
            raise KeyError(f"img_metas[{b}] has no '{field}' (TransformerOcc needs it; "
                           f"fields present: {sorted(meta)})")
        values.append(meta[field])
    return values


def can_bus_array(metas: Sequence[Mapping]) -> np.ndarray:
    """(bs, 18) float64 CAN-bus rows of ``metas``, checked."""
    rows = []
    for b, value in enumerate(_require(metas, "can_bus")):
        row = np.asarray(value, dtype=np.float64)
        if row.shape != (18,):
            raise ValueError(f"img_metas[{b}]['can_bus'] must hold 18 numbers, got shape {row.shape}")
        rows.append(row)
    return np.stack(rows)


@MODELS.register_module()
class TransformerOcc(BaseModule):
    """BEV encoder + 3D conv occupancy decoder (published ``TransformerOcc``).

    Only the published ``use_3d=True`` decoder exists here: the spec does not pin the
    arithmetic of the 2-D (``use_3d=False``) variant, so asking for it is an error rather
    than a guess. ``use_conv`` only selects between the 2-D variants and has no effect with
    ``use_3d=True``, as published."""

    def __init__(self, *, num_feature_levels: int = 4, num_cams: int = 6, encoder: Mapping,
                 embed_dims: int = 256, rotate_prev_bev: bool = True, use_shift: bool = True,
                 use_can_bus: bool = True, can_bus_norm: bool = True, use_cams_embeds: bool = True,
                 use_3d: bool = True, use_conv: bool = False, rotate_center: Sequence[float] = (100, 100),
                 num_classes: int = 18, out_dim: int = 32, pillar_h: int = 16,
                 act_cfg: Mapping | None = None, norm_cfg: Mapping | None = None,
                 norm_cfg_3d: Mapping | None = None, two_stage_num_proposals: int = 300,
                 init_cfg: Mapping | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not use_3d:
            raise ValueError("TransformerOcc supports only the published use_3d=True decoder "
                             "(Conv3d blocks + predicter); use_3d=False is not implemented")
        if embed_dims % pillar_h:
            raise ValueError(f"embed_dims ({embed_dims}) must be a multiple of pillar_h ({pillar_h}): "
                             "the BEV channels are read as (embed_dims/pillar_h, pillar_h)")
        if len(rotate_center) != 2:
            raise ValueError(f"rotate_center must be (x, y) in BEV cells, got {rotate_center!r}")
        act_cfg = dict(type="ReLU", inplace=True) if act_cfg is None else dict(act_cfg)
        norm_cfg_3d = dict(type="BN3d") if norm_cfg_3d is None else dict(norm_cfg_3d)
        self.embed_dims = embed_dims
        self.num_feature_levels = num_feature_levels
        self.num_cams = num_cams
        self.rotate_prev_bev = rotate_prev_bev
        self.use_shift = use_shift
        self.use_can_bus = use_can_bus
        self.can_bus_norm = can_bus_norm
        self.use_cams_embeds = use_cams_embeds
        self.use_3d = use_3d
        self.use_conv = use_conv
        self.rotate_center = [float(c) for c in rotate_center]
        self.num_classes = num_classes
        self.out_dim = out_dim
        self.pillar_h = pillar_h
        self.middle_dims = embed_dims // pillar_h
        self.two_stage_num_proposals = two_stage_num_proposals  # unused, as published
        # Direct parameters first: this is the published state_dict order. Drawn N(0, 1) here
        # already (published: uninitialised memory until init_weights), so a model built by
        # hand without init_weights() never computes on garbage.
        self.level_embeds = nn.Parameter(torch.randn(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.randn(num_cams, embed_dims))
        self.encoder = MODELS.build(encoder)
        bias_3d = norm_cfg_3d is None  # False here: BN3d follows each conv
        self.decoder = nn.Sequential(
            ConvModule(self.middle_dims, out_dim, 3, stride=1, padding=1, bias=bias_3d,
                       conv_cfg=dict(type="Conv3d"), norm_cfg=norm_cfg_3d, act_cfg=act_cfg),
            ConvModule(out_dim, out_dim, 3, stride=1, padding=1, bias=bias_3d,
                       conv_cfg=dict(type="Conv3d"), norm_cfg=norm_cfg_3d, act_cfg=act_cfg))
        self.predicter = nn.Sequential(nn.Linear(out_dim, out_dim * 2), nn.Softplus(),
                                       nn.Linear(out_dim * 2, num_classes))
        self.can_bus_mlp = nn.Sequential(nn.Linear(18, embed_dims // 2), nn.ReLU(inplace=True),
                                         nn.Linear(embed_dims // 2, embed_dims), nn.ReLU(inplace=True))
        if can_bus_norm:
            self.can_bus_mlp.add_module("norm", nn.LayerNorm(embed_dims))

    def init_weights(self) -> None:
        """The published order (§0): xavier on every >1-D parameter, the deformable
        attentions re-initialise themselves, N(0, 1) embeddings. The published final
        ``xavier_init(can_bus_mlp)`` is a no-op on a Sequential (no ``.weight``), so the
        can_bus_mlp biases keep PyTorch's Linear default: we simply do not touch them."""
        from autonomous_driving.bev_common.attention import (
            CustomMSDeformableAttention,
            MSDeformableAttention3D,
            TemporalSelfAttention,
        )

        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # SpatialCrossAttention is not in this list (published): its output_proj keeps the
        # xavier weight drawn above and the zero bias of its constructor.
        for m in self.modules():
            if isinstance(m, (MSDeformableAttention3D, TemporalSelfAttention, CustomMSDeformableAttention)):
                m.init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)

    # -- BEV features -------------------------------------------------------------------------

    def compute_shift(self, img_metas: Sequence[Mapping], grid_length: Sequence[float], bev_h: int,
                      bev_w: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(bs, 2) shift of the previous BEV in normalised BEV units, (x, y) order.

        ``can_bus[0:2]`` is the translation since the previous frame (global frame) and
        ``can_bus[-2]`` the **absolute** yaw in radians, as published (float64 numpy)."""
        can_bus = can_bus_array(img_metas)
        delta_x, delta_y = can_bus[:, 0], can_bus[:, 1]
        ego_angle = can_bus[:, -2] / np.pi * 180
        grid_length_y, grid_length_x = float(grid_length[0]), float(grid_length[1])
        translation_length = np.sqrt(delta_x ** 2 + delta_y ** 2)
        translation_angle = np.arctan2(delta_y, delta_x) / np.pi * 180
        bev_angle = ego_angle - translation_angle
        shift_y = translation_length * np.cos(bev_angle / 180 * np.pi) / grid_length_y / bev_h
        shift_x = translation_length * np.sin(bev_angle / 180 * np.pi) / grid_length_x / bev_w
        shift_y = shift_y * self.use_shift
        shift_x = shift_x * self.use_shift
        return torch.tensor(np.stack([shift_x, shift_y], axis=1), dtype=dtype, device=device)

    def rotate_bev(self, prev_bev: torch.Tensor, img_metas: Sequence[Mapping], bev_h: int,
                   bev_w: int) -> torch.Tensor:
        """``prev_bev`` (nq, bs, C) rotated per sample by the delta yaw ``can_bus[-1]``
        (degrees, counter-clockwise as displayed with row 0 on top) about
        ``rotate_center`` with torchvision's nearest-neighbour tensor ``rotate``, zero fill.

        The published code rotates in place into the caller's tensor; this returns a new
        tensor (same values). Nearest interpolation only moves values, so it runs in float32
        whatever the dtype (torchvision's grid sampling has no half kernel on every device)."""
        can_bus = can_bus_array(img_metas)
        rotated = []
        for b in range(prev_bev.size(1)):
            angle = float(can_bus[b, -1])  # torchvision wants a Python float
            grid = prev_bev[:, b].reshape(bev_h, bev_w, -1).permute(2, 0, 1)
            out = TF.rotate(grid.float(), angle, interpolation=InterpolationMode.NEAREST,
                            center=self.rotate_center)
            rotated.append(out.to(prev_bev.dtype).permute(1, 2, 0).reshape(bev_h * bev_w, -1))
        return torch.stack(rotated, dim=1)

    def get_bev_features(self, mlvl_feats: Sequence[torch.Tensor], bev_queries: torch.Tensor, bev_h: int,
                         bev_w: int, *, grid_length: Sequence[float], bev_pos: torch.Tensor,
                         img_metas: Sequence[Mapping], prev_bev: torch.Tensor | None = None) -> torch.Tensor:
        """BEV features (bs, Hb·Wb, C) from the camera features (list over levels of
        (bs, N, C, h, w)), the BEV queries (Hb·Wb, C), bev_pos (bs, C, Hb, Wb) and, when
        given, the previous BEV ((bs, Hb·Wb, C) or (bs, C, Hb, Wb))."""
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f"mlvl_feats must hold num_feature_levels={self.num_feature_levels} "
                             f"levels, got {len(mlvl_feats)}")
        bs, num_cams = mlvl_feats[0].shape[:2]
        if num_cams != self.num_cams:
            raise ValueError(f"the camera features hold {num_cams} cameras, the model was built for "
                             f"num_cams={self.num_cams}")
        if len(img_metas) != bs:
            raise ValueError(f"img_metas has {len(img_metas)} entries for a batch of {bs}")
        nq = bev_h * bev_w
        if bev_queries.shape != (nq, self.embed_dims):
            raise ValueError(f"bev_queries must be ({nq}, {self.embed_dims}), got {tuple(bev_queries.shape)}")
        center_x, center_y = self.rotate_center
        if self.rotate_prev_bev and not (0 <= center_x <= bev_w and 0 <= center_y <= bev_h):
            raise ValueError(f"rotate_center {self.rotate_center} (x, y cells) lies outside the "
                             f"{bev_w}x{bev_h} BEV grid; the published [100, 100] is the centre of 200x200")
        bev_queries = bev_queries.unsqueeze(1).repeat(1, bs, 1)
        bev_pos = bev_pos.flatten(2).permute(2, 0, 1)
        shift = self.compute_shift(img_metas, grid_length, bev_h, bev_w, dtype=bev_queries.dtype,
                                   device=bev_queries.device)

        if prev_bev is not None:
            if prev_bev.dim() == 3 and prev_bev.shape[1] == nq:
                prev_bev = prev_bev.permute(1, 0, 2)
            elif prev_bev.dim() == 4:
                prev_bev = prev_bev.reshape(bs, -1, nq).permute(2, 0, 1)
            else:
                raise ValueError(f"prev_bev must be (bs, {nq}, C) or (bs, C, {bev_h}, {bev_w}), "
                                 f"got {tuple(prev_bev.shape)}")
            if self.rotate_prev_bev:
                prev_bev = self.rotate_bev(prev_bev, img_metas, bev_h, bev_w)

        can_bus = bev_queries.new_tensor(can_bus_array(img_metas))
        can_bus = self.can_bus_mlp(can_bus)[None, :, :]
        bev_queries = bev_queries + can_bus * self.use_can_bus

        feat_flatten = []
        spatial_shapes = []
        for lvl, feat in enumerate(mlvl_feats):
            h, w = feat.shape[-2:]
            spatial_shapes.append((h, w))
            feat = feat.flatten(3).permute(1, 0, 3, 2)  # (N, bs, h·w, C)
            if self.use_cams_embeds:
                feat = feat + self.cams_embeds[:, None, None, :].to(feat.dtype)
            feat = feat + self.level_embeds[None, None, lvl:lvl + 1, :].to(feat.dtype)
            feat_flatten.append(feat)
        feat_flatten = torch.cat(feat_flatten, 2).permute(0, 2, 1, 3)  # (N, Lv, bs, C)
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=bev_queries.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))

        return self.encoder(bev_queries, feat_flatten, feat_flatten, bev_h=bev_h, bev_w=bev_w,
                            bev_pos=bev_pos, spatial_shapes=spatial_shapes,
                            level_start_index=level_start_index, prev_bev=prev_bev, shift=shift,
                            img_metas=img_metas)

    # -- occupancy ----------------------------------------------------------------------------

    def decode(self, bev_embed: torch.Tensor) -> torch.Tensor:
        """Logits (bs, Wb, Hb, Z, num_classes) from BEV features (bs, C, Hb, Wb): channel
        c = m·pillar_h + z is feature m at height z."""
        bs, _, bev_h, bev_w = bev_embed.shape
        volume = bev_embed.reshape(bs, self.middle_dims, self.pillar_h, bev_h, bev_w)
        volume = self.decoder(volume)  # (bs, out_dim, Z, Hb, Wb)
        return self.predicter(volume.permute(0, 4, 3, 2, 1))

    def forward(self, mlvl_feats: Sequence[torch.Tensor], bev_queries: torch.Tensor,
                object_query_embed: torch.Tensor | None, bev_h: int, bev_w: int, *,
                grid_length: Sequence[float], bev_pos: torch.Tensor, img_metas: Sequence[Mapping],
                prev_bev: torch.Tensor | None = None, reg_branches=None,
                cls_branches=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bev_embed (bs, C, Hb, Wb), logits (bs, Wb, Hb, Z, num_classes))``;
        ``object_query_embed``, ``reg_branches`` and ``cls_branches`` are unused (published
        signature)."""
        bev_embed = self.get_bev_features(mlvl_feats, bev_queries, bev_h, bev_w, grid_length=grid_length,
                                          bev_pos=bev_pos, img_metas=img_metas, prev_bev=prev_bev)
        bs = bev_embed.size(0)
        bev_embed = bev_embed.permute(0, 2, 1).reshape(bs, self.embed_dims, bev_h, bev_w)
        return bev_embed, self.decode(bev_embed)


__all__ = ["TransformerOcc", "can_bus_array"]
