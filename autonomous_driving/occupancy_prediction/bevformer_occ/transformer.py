"""``TransformerOcc``: the BEVFormer encoder turned into an occupancy volume.

The BEV queries see the cameras through the encoder (``get_bev_features``, shared with the
OpenLane-V2 constructor in ``bev_common.bev_features``: CAN-bus shift, previous-BEV rotation,
CAN-bus MLP, camera/level embeddings); the BEV features
(bs, C, Hb, Wb) are then read as (bs, C/pillar_h, pillar_h, Hb, Wb), decoded by two Conv3d
blocks and classified per voxel by ``predicter``. Names, order and initialisation follow the
published module (spec: driving_occupancy_params.md §0, §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from autonomous_driving.bev_common.bev_features import BEVFeaturesMixin, build_can_bus_mlp, can_bus_array


@MODELS.register_module()
class TransformerOcc(BEVFeaturesMixin, BaseModule):
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
        self.can_bus_mlp = build_can_bus_mlp(embed_dims, can_bus_norm)

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
