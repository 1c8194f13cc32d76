"""BEV-feature construction shared by the occupancy ``TransformerOcc`` and the OpenLane-V2
``BEVFormerConstructer`` (driving_occupancy_params.md §4, driving_openlane_params.md §2):
CAN-bus shift of the previous BEV, its rotation, the CAN-bus MLP added to the BEV queries,
camera / level embeddings on the flattened camera tokens, and the encoder call.

``BEVFeaturesMixin`` only holds methods: each host module creates its own parameters, in
its own published order, so the state_dict keys and their order stay those of the
published modules. A host provides (names as published):

- ``embed_dims``, ``num_feature_levels``, ``num_cams``;
- ``rotate_prev_bev``, ``rotate_center`` ((x, y) in BEV cells), ``use_shift``,
  ``use_can_bus``, ``use_cams_embeds``;
- ``level_embeds`` (levels, C), ``cams_embeds`` (N, C), ``can_bus_mlp``
  (:func:`build_can_bus_mlp`), ``encoder`` (a ``BEVFormerEncoder``).

A host may override :meth:`BEVFeaturesMixin.compute_shift` (OpenLane-V2 hands the encoder a
zero shift)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

_HOST_ATTRIBUTES = (
    "embed_dims",
    "num_feature_levels",
    "num_cams",
    "rotate_prev_bev",
    "rotate_center",
    "use_shift",
    "use_can_bus",
    "use_cams_embeds",
    "level_embeds",
    "cams_embeds",
    "can_bus_mlp",
    "encoder",
)


def _require(metas: Sequence[Mapping], field: str) -> list:
    """``field`` of every per-sample meta, with an error naming the sample that lacks it."""
    values = []
    for b, meta in enumerate(metas):
        if field not in meta:
            raise KeyError(
                f"img_metas[{b}] has no '{field}' (the BEV construction needs it; "
                f"fields present: {sorted(meta)})"
            )
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


def build_can_bus_mlp(embed_dims: int, norm: bool) -> nn.Sequential:
    """The published ``can_bus_mlp``: 18 -> C/2 -> C with ReLUs, then a LayerNorm (key
    ``norm``) when ``norm`` (``can_bus_norm``)."""
    mlp = nn.Sequential(
        nn.Linear(18, embed_dims // 2),
        nn.ReLU(inplace=True),
        nn.Linear(embed_dims // 2, embed_dims),
        nn.ReLU(inplace=True),
    )
    if norm:
        mlp.add_module("norm", nn.LayerNorm(embed_dims))
    return mlp


class BEVFeaturesMixin:
    """``get_bev_features`` and its steps for a module with the attributes of the module
    docstring; mix in before ``BaseModule``."""

    def _check_bev_host(self) -> None:
        missing = [name for name in _HOST_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            raise AttributeError(
                f"{type(self).__name__} uses BEVFeaturesMixin but lacks {missing} "
                "(see autonomous_driving.bev_common.bev_features)"
            )

    def compute_shift(
        self,
        img_metas: Sequence[Mapping],
        grid_length: Sequence[float],
        bev_h: int,
        bev_w: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """(bs, 2) shift of the previous BEV in normalised BEV units, (x, y) order.

        ``can_bus[0:2]`` is the translation since the previous frame (global frame) and
        ``can_bus[-2]`` the **absolute** yaw in radians, as published (float64 numpy)."""
        can_bus = can_bus_array(img_metas)
        delta_x, delta_y = can_bus[:, 0], can_bus[:, 1]
        ego_angle = can_bus[:, -2] / np.pi * 180
        grid_length_y, grid_length_x = float(grid_length[0]), float(grid_length[1])
        translation_length = np.sqrt(delta_x**2 + delta_y**2)
        translation_angle = np.arctan2(delta_y, delta_x) / np.pi * 180
        bev_angle = ego_angle - translation_angle
        shift_y = translation_length * np.cos(bev_angle / 180 * np.pi) / grid_length_y / bev_h
        shift_x = translation_length * np.sin(bev_angle / 180 * np.pi) / grid_length_x / bev_w
        shift_y = shift_y * self.use_shift
        shift_x = shift_x * self.use_shift
        return torch.tensor(np.stack([shift_x, shift_y], axis=1), dtype=dtype, device=device)

    def rotate_bev(
        self, prev_bev: torch.Tensor, img_metas: Sequence[Mapping], bev_h: int, bev_w: int
    ) -> torch.Tensor:
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
            out = TF.rotate(
                grid.float(), angle, interpolation=InterpolationMode.NEAREST, center=self.rotate_center
            )
            rotated.append(out.to(prev_bev.dtype).permute(1, 2, 0).reshape(bev_h * bev_w, -1))
        return torch.stack(rotated, dim=1)

    def get_bev_features(
        self,
        mlvl_feats: Sequence[torch.Tensor],
        bev_queries: torch.Tensor,
        bev_h: int,
        bev_w: int,
        *,
        grid_length: Sequence[float],
        bev_pos: torch.Tensor,
        img_metas: Sequence[Mapping],
        prev_bev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """BEV features (bs, Hb·Wb, C) from the camera features (list over levels of
        (bs, N, C, h, w)), the BEV queries (Hb·Wb, C), bev_pos (bs, C, Hb, Wb) and, when
        given, the previous BEV ((bs, Hb·Wb, C) or (bs, C, Hb, Wb))."""
        self._check_bev_host()
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(
                f"mlvl_feats must hold num_feature_levels={self.num_feature_levels} "
                f"levels, got {len(mlvl_feats)}"
            )
        bs, num_cams = mlvl_feats[0].shape[:2]
        if num_cams != self.num_cams:
            raise ValueError(
                f"the camera features hold {num_cams} cameras, the model was built for "
                f"num_cams={self.num_cams}"
            )
        if len(img_metas) != bs:
            raise ValueError(f"img_metas has {len(img_metas)} entries for a batch of {bs}")
        nq = bev_h * bev_w
        if bev_queries.shape != (nq, self.embed_dims):
            raise ValueError(f"bev_queries must be ({nq}, {self.embed_dims}), got {tuple(bev_queries.shape)}")
        center_x, center_y = self.rotate_center
        if self.rotate_prev_bev and not (0 <= center_x <= bev_w and 0 <= center_y <= bev_h):
            raise ValueError(
                f"rotate_center {self.rotate_center} (x, y cells) lies outside the "
                f"{bev_w}x{bev_h} BEV grid; the published [100, 100] is the centre of 200x200"
            )
        bev_queries = bev_queries.unsqueeze(1).repeat(1, bs, 1)
        bev_pos = bev_pos.flatten(2).permute(2, 0, 1)
        shift = self.compute_shift(
            img_metas, grid_length, bev_h, bev_w, dtype=bev_queries.dtype, device=bev_queries.device
        )

        if prev_bev is not None:
            if prev_bev.dim() == 3 and prev_bev.shape[1] == nq:
                prev_bev = prev_bev.permute(1, 0, 2)
            elif prev_bev.dim() == 4:
                prev_bev = prev_bev.reshape(bs, -1, nq).permute(2, 0, 1)
            else:
                raise ValueError(
                    f"prev_bev must be (bs, {nq}, C) or (bs, C, {bev_h}, {bev_w}), "
                    f"got {tuple(prev_bev.shape)}"
                )
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
            feat = feat + self.level_embeds[None, None, lvl : lvl + 1, :].to(feat.dtype)
            feat_flatten.append(feat)
        feat_flatten = torch.cat(feat_flatten, 2).permute(0, 2, 1, 3)  # (N, Lv, bs, C)
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=bev_queries.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))

        return self.encoder(
            bev_queries,
            feat_flatten,
            feat_flatten,
            bev_h=bev_h,
            bev_w=bev_w,
            bev_pos=bev_pos,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            prev_bev=prev_bev,
            shift=shift,
            img_metas=img_metas,
        )


__all__ = ["BEVFeaturesMixin", "build_can_bus_mlp", "can_bus_array"]
