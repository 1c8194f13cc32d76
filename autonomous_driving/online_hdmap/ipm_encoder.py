"""``IPMEncoder`` (``backbone.*``, driving_hdmap_params.md §1): image backbone -> FPN ->
``Upsample`` (sum of the 4 levels at stride 4) -> inverse perspective mapping onto 4
horizontal planes of the 60 m x 30 m box (mean over the cameras that see a point, plus
the x, y, z coordinates) -> 3x3 conv to ``out_channels``. The geometry is ``ipm``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from autonomous_driving.bev_common import backbone as _backbone  # noqa: F401  (registers InternImage)

from .ipm import Upsample, construct_plane_grid, ipm


def stack_ego2img(img_metas: Sequence[Mapping[str, Any]], like: torch.Tensor) -> torch.Tensor:
    """``(B, N, 4, 4)`` float tensor of the metas' ``ego2img`` (numpy float64 in the
    pipeline; cast to ``like``'s dtype, as the published ``new_tensor``)."""
    mats = []
    for i, meta in enumerate(img_metas):
        if "ego2img" not in meta:
            raise KeyError(f"img_metas[{i}]: no 'ego2img' (the per-camera ego -> image 4x4 matrices)")
        m = meta["ego2img"]
        m = (
            m.detach().cpu().double().numpy()
            if isinstance(m, torch.Tensor)
            else np.asarray(m, dtype=np.float64)
        )
        if m.ndim != 3 or m.shape[1:] != (4, 4):
            raise ValueError(f"img_metas[{i}]['ego2img']: expected (N, 4, 4), got {m.shape}")
        mats.append(m)
    if len({m.shape for m in mats}) != 1:
        raise ValueError(f"ego2img: every sample needs the same cameras, got {[m.shape for m in mats]}")
    return torch.from_numpy(np.stack(mats)).to(device=like.device, dtype=like.dtype)


@MODELS.register_module()
class IPMEncoder(BaseModule):
    """Camera images ``(B, N, 3, H, W)`` + per-sample ``img_metas`` (``ego2img`` (N, 4, 4)
    for the image tensor as given) -> BEV ``(B, out_channels, Y, X)`` (100 x 200 published:
    rows = y from -15 m, columns = x from -30 m).

    ``img_shape`` for the projection is the image tensor's (padded) size, as published.
    ``masked_embeds`` exists, as published, and is never used. LiDAR input
    (``use_lidar=True``) is not published here and raises; ``pretrained`` is the mmdet 2
    argument, set the backbone's ``init_cfg`` instead."""

    def __init__(
        self,
        img_backbone: Mapping,
        img_neck: Mapping,
        upsample: Mapping | None = None,
        xbound: Sequence[float] = (-30.0, 30.0, 0.3),
        ybound: Sequence[float] = (-15.0, 15.0, 0.3),
        heights: Sequence[float] = (-1.1, 0, 0.5, 1.1),
        out_channels: int = 128,
        pretrained: str | None = None,
        num_cam: int = 7,
        use_lidar: bool = False,
        use_image: bool = True,
        lidar_dim: int = 128,
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if use_lidar or not use_image:
            raise ValueError(
                "IPMEncoder: only the camera branch is published (use_lidar=False, use_image=True)"
            )
        if pretrained is not None:
            raise ValueError(
                "IPMEncoder: pretrained is not read; give img_backbone "
                "init_cfg=dict(type='Pretrained', checkpoint=...)"
            )
        self.num_cam = num_cam
        self.heights = list(heights)
        self.img_backbone = MODELS.build(dict(img_backbone))
        self.img_neck = MODELS.build(dict(img_neck))
        up = dict(zoom_size=(1, 2, 4, 8), in_channels=128, out_channels=128)
        up.update(upsample or {})
        self.upsample = Upsample(**up)
        feat_channels = up["out_channels"]
        self.outconvs = nn.Conv2d(
            (feat_channels + 3) * len(self.heights), out_channels, kernel_size=3, padding=1
        )
        nn.init.xavier_uniform_(self.outconvs.weight)  # bias keeps the PyTorch default, as published
        self.register_buffer("bev_planes", construct_plane_grid(xbound, ybound, heights))
        self.masked_embeds = nn.Embedding(len(self.heights), out_channels)  # unused, as published
        self.out_channels = out_channels

    def extract_img_feat(self, imgs: torch.Tensor) -> torch.Tensor:
        feats = self.img_neck(self.img_backbone(imgs.flatten(0, 1)))  # cameras folded into the batch
        return self.upsample(list(feats))

    def forward(self, imgs: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        if imgs.ndim != 5 or imgs.shape[2] != 3:
            raise ValueError(f"imgs: expected (B, N, 3, H, W), got {tuple(imgs.shape)}")
        b, n = imgs.shape[:2]
        if n != self.num_cam:
            raise ValueError(f"imgs: {n} cameras, the encoder is built for num_cam={self.num_cam}")
        if len(img_metas) != b:
            raise ValueError(f"img_metas: {len(img_metas)} entries for a batch of {b}")
        ego2img = stack_ego2img(img_metas, imgs)
        if ego2img.shape[1] != n:
            raise ValueError(f"ego2img: {ego2img.shape[1]} matrices per sample for {n} cameras")
        cam_feat = self.extract_img_feat(imgs)
        bev, _ = ipm(cam_feat, self.bev_planes, ego2img, imgs.shape[-2:])
        # (B, C + 3, L, Y, X) -> (B, (C + 3) * L, Y, X): channel index c * L + level, as published.
        return self.outconvs(bev.flatten(1, 2))
