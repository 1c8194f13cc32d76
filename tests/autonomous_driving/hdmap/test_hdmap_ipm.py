"""IPM geometry and Upsample (driving_hdmap_params.md §1): the plane grid, projection
with the published epsilon and padded normalisation, camera averaging, channel order."""

from __future__ import annotations

import math

import pytest
import torch

from autonomous_driving.online_hdmap.ipm import Upsample, construct_plane_grid, get_campos, ipm

W_IMG, H_IMG = 480, 256  # the padded published batch size


def camera(yaw_deg: float, f: float = 200.0, cx: float = 227.5, cy: float = 128.0) -> torch.Tensor:
    """ego2img of a level camera at the ego origin looking along ``yaw``."""
    yaw = math.radians(yaw_deg)
    rot = torch.tensor(
        [[math.sin(yaw), -math.cos(yaw), 0.0], [0.0, 0.0, -1.0], [math.cos(yaw), math.sin(yaw), 0.0]],
        dtype=torch.float64,
    )
    ext = torch.eye(4, dtype=torch.float64)
    ext[:3, :3] = rot
    k = torch.eye(4, dtype=torch.float64)
    k[:3, :3] = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=torch.float64)
    return k @ ext


def test_plane_grid() -> None:
    planes = construct_plane_grid()
    assert planes.shape == (4, 100, 200, 3) and planes.dtype == torch.float32
    x, y = planes[0, 0, :, 0], planes[0, :, 0, 1]
    assert x[0] == -30 and x[-1] == 30 and y[0] == -15 and y[-1] == 15
    torch.testing.assert_close(x[1] - x[0], torch.tensor(60 / 199))  # endpoints included
    torch.testing.assert_close(y[1] - y[0], torch.tensor(30 / 99))
    assert planes[:, 0, 0, 2].tolist() == pytest.approx([-1.1, 0, 0.5, 1.1])
    assert torch.equal(planes[2, 7, 9, :2], planes[0, 7, 9, :2])


def test_get_campos() -> None:
    pts = torch.tensor([[[10.0, 0.0, 0.0], [10.0, 2.0, -1.0], [-10.0, 0.0, 0.0], [10.0, 30.0, 0.0]]])
    grid, mask = get_campos(pts, camera(0).float()[None, None], (H_IMG, W_IMG))
    assert grid.shape == (1, 4, 2) and mask.tolist() == [[[True, True, False, False]]]
    # (10, 0, 0): u = cx = 227.5, v = cy; normalised by the *padded* width 480.
    torch.testing.assert_close(grid[0, 0], torch.tensor([(227.5 / 480 - 0.5) * 2, 0.0]))
    # (10, 2, -1): right = -y -> u = cx - f * 2 / 10 = 187.5; down = -z -> v = cy + 20.
    torch.testing.assert_close(grid[0, 1], torch.tensor([(187.5 / 480 - 0.5) * 2, (148 / 256 - 0.5) * 2]))
    # Masked points are sent outside the image (no NaN from a zero depth).
    assert (grid[0, 2:] == -2).all()
    on_plane = torch.tensor([[[0.0, 1.0, 0.0]]])  # depth exactly 0
    grid, mask = get_campos(on_plane, camera(0).float()[None, None], (H_IMG, W_IMG))
    assert not mask.any() and torch.isfinite(grid).all()


def test_ipm_averages_visible_cameras() -> None:
    # Feature channel 0 holds the image-space u of each feature pixel centre, so bilinear
    # sampling returns the projected u itself; channel 1 is constant 1 (visibility).
    h, w = H_IMG // 4, W_IMG // 4
    u_map = ((torch.arange(w) + 0.5) * (W_IMG / w)).expand(h, w)
    feat = torch.stack([u_map, torch.ones(h, w)])[None].repeat(2, 1, 1, 1)  # 2 cameras, B = 1
    ego2img = torch.stack([camera(0), camera(10)])[None].float()
    planes = torch.tensor([[[[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0]]]])  # (L=1, Y=1, X=2, 3)
    out, seen = ipm(feat, planes, ego2img, (H_IMG, W_IMG))
    assert out.shape == (1, 2 + 3, 1, 1, 2)
    us = [227.5, 227.5 + 200 * math.tan(math.radians(10))]  # the 10-degree camera sees it right of centre
    torch.testing.assert_close(out[0, 0, 0, 0, 0], torch.tensor(sum(us) / 2), atol=1e-3, rtol=0)
    assert out[0, 1, 0, 0, 0] == pytest.approx(1.0)
    assert (out[0, :2, 0, 0, 1] == 0).all()  # behind both cameras
    assert seen.tolist() == [[[[True, False]]]]
    torch.testing.assert_close(out[0, 2:, 0, 0, 1], torch.tensor([-10.0, 0.0, 0.0]))  # raw metres
    # After flatten(1, 2) the channel index is c * levels + level (heights interleaved).
    two = torch.cat([planes, planes + torch.tensor([0.0, 0.0, 1.0])])  # L = 2
    out2, _ = ipm(feat, two, ego2img, (H_IMG, W_IMG))
    flat = out2.flatten(1, 2)
    assert flat.shape[1] == (2 + 3) * 2
    torch.testing.assert_close(flat[0, 2 * 2 + 0], torch.full((1, 2), 10.0) * torch.tensor([1.0, -1.0]))
    assert (flat[0, 4 * 2 + 1] == 1.0).all() and (flat[0, 4 * 2 + 0] == 0.0).all()  # z of levels 1, 0


def test_upsample_keys_and_sum() -> None:
    up = Upsample(zoom_size=(1, 2, 4, 8), in_channels=128, out_channels=128)
    keys = list(up.state_dict())
    assert keys[:4] == [
        "fscale.1.0.gn.weight",
        "fscale.1.0.gn.bias",
        "fscale.1.0.conv.weight",
        "fscale.1.0.conv.bias",
    ]
    assert {k.rsplit(".", 2)[0] for k in keys} == {
        "fscale.1.0",
        "fscale.2.0",
        "fscale.2.1",
        "fscale.3.0",
        "fscale.3.1",
        "fscale.3.2",
    }
    assert all((m.bias == 0).all() for m in up.modules() if isinstance(m, torch.nn.Conv2d))
    small = Upsample(in_channels=32, out_channels=32)
    feats = [torch.randn(2, 32, 8 // s, 16 // s) for s in (1, 2, 4, 8)]
    out = small(feats)
    assert out.shape == (2, 32, 8, 16)
    zero_rest = [feats[0]] + [torch.zeros_like(f) for f in feats[1:]]
    # Zero inputs through conv (bias 0) -> GN -> ReLU stay 0: level 0 passes unchanged.
    torch.testing.assert_close(small(zero_rest), feats[0])
    with pytest.raises(ValueError, match="powers of 2"):
        Upsample(zoom_size=(1, 3), in_channels=32, out_channels=32)
