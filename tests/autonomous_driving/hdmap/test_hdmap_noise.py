"""NoiseSythesis.simple_aug (driving_hdmap_params.md §3.2): buffers, the published clamp
quirk, masking of stop/padding, replacement probability and the RNG call order."""

from __future__ import annotations

import pytest
import torch

from autonomous_driving.online_hdmap.noise import NoiseSythesis


def batch(n: int = 3) -> dict:
    # Lines of 2, 1 and 3 vertices: lengths 5, 3, 7 -> padded to L = 7.
    seqs = [[50, 40, 150, 60, 0], [100, 50, 0], [20, 10, 30, 20, 40, 30, 0]]
    seqs = (seqs * ((n + 2) // 3))[:n]
    polylines = torch.zeros(n, 7, dtype=torch.int32)
    masks = torch.zeros(n, 7, dtype=torch.bool)
    for i, s in enumerate(seqs):
        polylines[i, : len(s)] = torch.tensor(s)
        masks[i, : len(s)] = True
    bbox = torch.tensor(
        [[49, 39, 149, 59], [99, 49, 99, 49], [19, 9, 39, 29]] * ((n + 2) // 3), dtype=torch.int32
    )[:n]
    return {"bbox_flat": bbox, "polylines": polylines, "polyline_masks": masks, "lines_cls": torch.zeros(n)}


def test_buffers_are_the_published_state() -> None:
    sd = NoiseSythesis().state_dict()
    assert list(sd) == ["canvas_size", "shift_scale", "scaling_size"]
    assert sd["canvas_size"].dtype == torch.int64 and sd["canvas_size"].tolist() == [200, 100]
    assert sd["shift_scale"].tolist() == [8.0, 5.0]
    assert sd["scaling_size"].tolist() == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="xyxy"):
        NoiseSythesis(bbox_type="cxcywh")


def test_p_zero_is_identity_and_masks_pass_through() -> None:
    b = batch()
    out = NoiseSythesis(p=0.0).simple_aug(b)
    assert torch.equal(out["bbox_flat"], b["bbox_flat"]) and torch.equal(out["polylines"], b["polylines"])
    assert out["polyline_masks"] is b["polyline_masks"] and out["lines_cls"] is b["lines_cls"]


def test_p_one_quirks_and_ranges() -> None:
    b = batch(300)
    out = NoiseSythesis(p=1.0).simple_aug(b, torch.Generator().manual_seed(0))
    box = out["bbox_flat"].view(-1, 2, 2)
    # [quirk] y := clamp(clamped noisy x, 1, 100).
    assert torch.equal(box[..., 1], box[..., 0].clamp(1, 100))
    assert ((box[..., 0] >= 1) & (box[..., 0] <= 200)).all()
    seq, masks = out["polylines"], b["polyline_masks"]
    # Stop tokens and padding are zeroed (the mask shifted left by one).
    stop_or_pad = ~torch.cat([masks[:, 1:], torch.zeros(len(masks), 1, dtype=torch.bool)], 1)
    assert (seq[stop_or_pad] == 0).all()
    assert (seq[:, 0::2] <= 200).all() and (seq[:, 1::2] <= 100).all() and (seq >= 0).all()
    # Noise scale: x std 2, y std 1 (canvas * 0.01) on interior tokens.
    d = (seq - b["polylines"]).float()[~stop_or_pad].view(-1)
    dx = (seq - b["polylines"]).float()[:, 0:6:2][~stop_or_pad[:, 0:6:2]]
    dy = (seq - b["polylines"]).float()[:, 1:6:2][~stop_or_pad[:, 1:6:2]]
    assert d.numel() == dx.numel() + dy.numel()
    assert 1.7 < dx.std() < 2.3 and 0.8 < dy.std() < 1.2


def test_replacement_probability() -> None:
    b = batch(3000)
    out = NoiseSythesis(p=0.3).simple_aug(b, torch.Generator().manual_seed(1))
    # A replaced x token differs from the original unless the rounded noise is 0
    # (P(|N(0, 2)| < 0.5) = 0.197): expected changed fraction 0.3 * 0.803 = 0.241.
    changed = (out["polylines"][:, 0] != b["polylines"][:, 0]).float().mean()
    assert 0.21 < changed < 0.27


def test_rng_call_order() -> None:
    b = batch(4)
    out = NoiseSythesis(p=0.3).simple_aug(b, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    sigma = torch.tensor([2.0, 1.0])
    corners = b["bbox_flat"].view(-1, 2, 2).float()
    nb = torch.normal(corners, sigma.expand_as(corners), generator=g).round().int()
    nb[..., 0] = nb[..., 0].clamp(1, 200)
    nb[..., 1] = nb[..., 0].clamp(1, 100)
    ub = torch.rand(4, 4, generator=g)
    pairs = torch.cat([b["polylines"], torch.zeros(4, 1, dtype=torch.int32)], 1).view(4, 4, 2).float()
    ns = torch.normal(pairs, sigma.expand_as(pairs), generator=g).round().int()
    ns[..., 0] = ns[..., 0].clamp(0, 200)
    ns[..., 1] = ns[..., 1].clamp(0, 100)
    shifted = torch.cat([b["polyline_masks"][:, 1:], torch.zeros(4, 2, dtype=torch.bool)], 1).int()
    ns = (ns.view(4, 8) * shifted)[:, :7]
    us = torch.rand(4, 7, generator=g)
    assert torch.equal(out["bbox_flat"], torch.where(ub < 0.3, nb.view(4, 4), b["bbox_flat"]))
    assert torch.equal(out["polylines"], torch.where(us < 0.3, ns, b["polylines"]))
    # Without a generator the global RNG is used (published).
    torch.manual_seed(5)
    assert torch.equal(NoiseSythesis(p=0.3).simple_aug(b)["polylines"], out["polylines"])


def test_shape_errors() -> None:
    b = batch()
    with pytest.raises(ValueError, match="L odd"):
        NoiseSythesis().simple_aug(
            {**b, "polylines": b["polylines"][:, :6], "polyline_masks": b["polyline_masks"][:, :6]}
        )
    with pytest.raises(ValueError, match=r"bbox_flat: expected \(N, 4\)"):
        NoiseSythesis().simple_aug({**b, "bbox_flat": b["bbox_flat"][:, :3]})
