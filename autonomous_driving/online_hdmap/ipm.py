"""IPM geometry and the multi-level ``Upsample`` of ``IPMEncoder`` (driving_hdmap_params.md
§1.1-1.3), plain torch: camera features sampled on 4 horizontal planes of the 60 m x
30 m box and averaged over the cameras that see each point."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def construct_plane_grid(
    xbound: Sequence[float] = (-30, 30, 0.3),
    ybound: Sequence[float] = (-15, 15, 0.3),
    heights: Sequence[float] = (-1.1, 0, 0.5, 1.1),
) -> torch.Tensor:
    """``bev_planes (levels, rows = y, cols = x, xyz)`` in ego metres, float32.

    ``num_x = int((xmax - xmin) / step)`` and ``linspace(xmin, xmax, num_x)`` with both
    ends included (so the spacing is 60/199, not 0.3), likewise y; rows follow y
    ascending, columns x ascending."""
    num_x = int((xbound[1] - xbound[0]) / xbound[2])
    num_y = int((ybound[1] - ybound[0]) / ybound[2])
    x = torch.linspace(xbound[0], xbound[1], num_x)
    y = torch.linspace(ybound[0], ybound[1], num_y)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    planes = [torch.stack([xx, yy, torch.full_like(xx, float(h))], -1) for h in heights]
    return torch.stack(planes)


def get_campos(
    points: torch.Tensor, ego2img: torch.Tensor, img_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``points (B, Q, 3)`` into every camera (``ego2img (B, C, 4, 4)``).

    Returns ``grid (B*C, Q, 2)`` in grid_sample's [-1, 1] (x, y) and ``mask (B, C, Q)``:
    in front (``z > 1e-9``) and strictly inside the image. As published the pixel is
    ``x / z + 1e-9`` (the epsilon on the quotient, not the depth) and is normalised by
    ``img_shape`` = the *padded* size of the image batch.
    """
    if points.ndim != 3 or points.shape[-1] != 3 or ego2img.shape[-2:] != (4, 4) or ego2img.ndim != 4:
        raise ValueError(
            "points (B, Q, 3) and ego2img (B, C, 4, 4) expected, got "
            f"{tuple(points.shape)}, {tuple(ego2img.shape)}"
        )
    b, c = ego2img.shape[:2]
    h_img, w_img = img_shape
    homo = torch.cat([points, torch.ones_like(points[..., :1])], -1)  # (B, Q, 4)
    cam = torch.einsum("bcij,bqj->bcqi", ego2img.to(points.dtype), homo)  # (B, C, Q, 4)
    depth = cam[..., 2]
    mask = depth > 1e-9
    u = cam[..., 0] / depth + 1e-9
    v = cam[..., 1] / depth + 1e-9
    gx = (u / w_img - 0.5) * 2
    gy = (v / h_img - 0.5) * 2
    mask = mask & (gx > -1) & (gx < 1) & (gy > -1) & (gy < 1)
    grid = torch.stack([gx, gy], -1)
    # Points the mask drops are multiplied by 0 after sampling; a depth of exactly 0 would
    # give inf/NaN coordinates and NaN * 0 = NaN, so they sample from outside instead
    # (same result wherever the published arithmetic is finite).
    grid = torch.where(mask[..., None], grid, torch.full_like(grid, -2.0))
    return grid.reshape(b * c, -1, 2), mask


def ipm(
    cam_feat: torch.Tensor, bev_planes: torch.Tensor, ego2img: torch.Tensor, img_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``cam_feat (B*C, Ch, h, w)`` on the planes: ``(B, Ch + 3, L, Y, X)`` features
    (mean over the cameras that see a point, 0 where none does) with the raw x, y, z in
    metres appended as the last 3 channels, and the (unused) ``(B, L, Y, X)`` any-camera mask."""
    b, c = ego2img.shape[:2]
    levels, ny, nx, _ = bev_planes.shape
    if cam_feat.shape[0] != b * c:
        raise ValueError(f"cam_feat: expected B*C = {b * c} maps, got {cam_feat.shape[0]}")
    pts = bev_planes.to(cam_feat.dtype).reshape(1, -1, 3).expand(b, -1, -1)  # level -> row -> col
    grid, mask = get_campos(pts, ego2img, img_shape)
    grid = grid.view(b * c, levels * ny, nx, 2)
    feat = F.grid_sample(cam_feat, grid, align_corners=False)  # bilinear, zeros padding
    feat = feat.view(b, c, -1, levels, ny, nx)
    m = mask.view(b, c, 1, levels, ny, nx).to(feat.dtype)
    count = m.sum(1)
    feat = (feat * m).sum(1) / torch.where(count > 0, count, torch.ones_like(count))
    coords = pts.reshape(b, levels, ny, nx, 3).permute(0, 4, 1, 2, 3)
    return torch.cat([feat, coords], 1), mask.view(b, c, levels, ny, nx).any(1)


class UpsampleBlock(nn.Module):
    """Conv3x3 (bias) -> GroupNorm -> ReLU -> bilinear x2 (``align_corners=True``).
    ``gn`` is registered before ``conv``, as published (state_dict order)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 32) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(num_groups, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn(self.conv(x)))
        return F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)


class Upsample(nn.Module):
    """Bring FPN level ``i`` up by ``zoom_size[i]`` (``log2`` blocks; zoom 1 is an
    Identity) and sum the levels."""

    def __init__(
        self,
        zoom_size: Sequence[int] = (1, 2, 4, 8),
        in_channels: int = 128,
        out_channels: int = 128,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        if 1 in zoom_size and in_channels != out_channels:
            # A zoom-1 level passes through unchanged, so it can only be summed with the
            # others when the widths agree (128 -> 128 published).
            raise ValueError(
                f"zoom 1 needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        # One prototype per role, deep-copied into every slot (then re-initialised).
        first = UpsampleBlock(in_channels, out_channels, num_groups)
        inter = UpsampleBlock(out_channels, out_channels, num_groups)
        scales = []
        for zoom in zoom_size:
            n = int(math.log2(zoom)) if zoom >= 1 else -1
            if n < 0 or 2**n != zoom:
                raise ValueError(f"zoom_size entries must be powers of 2, got {zoom}")
            blocks = [copy.deepcopy(first)] + [copy.deepcopy(inter) for _ in range(n - 1)]
            scales.append(nn.Identity() if n == 0 else nn.Sequential(*blocks))
        self.fscale = nn.ModuleList(scales)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.fscale):
            raise ValueError(f"expected {len(self.fscale)} feature levels, got {len(feats)}")
        outs = [f(x) for f, x in zip(self.fscale, feats)]
        if len({o.shape for o in outs}) != 1:
            raise ValueError(f"upsampled levels disagree in shape: {[tuple(o.shape) for o in outs]}")
        return torch.stack(outs).sum(0)
