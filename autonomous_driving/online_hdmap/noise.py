"""``NoiseSythesis`` (published spelling): the generator's training-time condition noise
(driving_hdmap_params.md §3, §3.2), plain torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class NoiseSythesis(nn.Module):
    """Gaussian noise on the quantised condition boxes and the teacher-forcing input
    tokens, each element replaced by its noisy value with probability ``p``.

    Buffers as published (persistent, so they are in the state_dict): ``canvas_size``
    (int64), ``shift_scale`` and ``scaling_size`` (the latter two only feed the unused
    shifting/scaling augmentations). Only ``bbox_type='xyxy'`` is published.
    """

    def __init__(
        self,
        p: float = 0.3,
        scale: float = 0.01,
        bbox_type: str = "xyxy",
        canvas_size: Sequence[int] = (200, 100),
        shift_scale: Sequence[float] = (8.0, 5.0),
        scaling_size: Sequence[float] = (0.1, 0.1),
        quantify: bool = True,
    ) -> None:
        super().__init__()
        if bbox_type != "xyxy":
            raise ValueError(
                f"bbox_type: only 'xyxy' (the published setting) is supported, got {bbox_type!r}"
            )
        if not quantify:
            raise ValueError("quantify=False is not published (tokens are integers); use quantify=True")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.scale = scale
        self.bbox_type = bbox_type
        self.register_buffer("canvas_size", torch.tensor(canvas_size, dtype=torch.int64))
        self.register_buffer("shift_scale", torch.tensor(shift_scale, dtype=torch.float32))
        self.register_buffer("scaling_size", torch.tensor(scaling_size, dtype=torch.float32))

    def simple_aug(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Noisy copies of ``batch['bbox_flat'] (N, 4)`` and ``batch['polylines'] (N, L)``;
        ``polyline_masks`` and everything else pass through unchanged (the loss uses the
        clean sequences). Random draws in the published order: box normal, box uniform,
        token normal, token uniform (global RNG unless ``generator`` is given)."""
        bbox = batch["bbox_flat"]
        seq = batch["polylines"]
        masks = batch["polyline_masks"]
        if bbox.ndim != 2 or bbox.shape[1] != 4:
            raise ValueError(f"bbox_flat: expected (N, 4), got {tuple(bbox.shape)}")
        if (
            seq.ndim != 2
            or seq.shape[0] != bbox.shape[0]
            or seq.shape[1] % 2 != 1
            or masks.shape != seq.shape
        ):
            raise ValueError(
                "polylines / polyline_masks: expected (N, L) with L odd (2n + 1) and N as bbox_flat, got "
                f"{tuple(seq.shape)} / {tuple(masks.shape)} for {bbox.shape[0]} boxes"
            )
        cx, cy = (int(v) for v in self.canvas_size.tolist())
        sigma = self.canvas_size.float() * self.scale  # (2.0, 1.0) published

        # Boxes, viewed as (N, 2 corners, xy).
        corners = bbox.view(-1, 2, 2).float()
        noisy = torch.normal(corners, sigma.expand_as(corners), generator=generator).round().int()
        noisy[..., 0] = noisy[..., 0].clamp(1, cx)
        # [quirk] the published clamp loop writes the *x* column into y: y becomes
        # min(clamped noisy x, 100) and the drawn y noise is discarded. Kept: it defines
        # the condition the published generator was trained with.
        noisy[..., 1] = noisy[..., 0].clamp(1, cy)
        noisy = noisy.view(-1, 4)
        keep_noise = torch.rand(noisy.shape, generator=generator, device=noisy.device) < self.p
        new_bbox = torch.where(keep_noise, noisy.to(bbox.dtype), bbox)

        # Tokens: pad one 0 and view as (x, y) pairs.
        n, length = seq.shape
        pairs = torch.cat([seq, seq.new_zeros(n, 1)], 1).view(n, -1, 2).float()
        noisy_seq = torch.normal(pairs, sigma.expand_as(pairs), generator=generator).round().int()
        noisy_seq[..., 0] = noisy_seq[..., 0].clamp(0, cx)  # lower bound 0: may become a stop token
        noisy_seq[..., 1] = noisy_seq[..., 1].clamp(0, cy)
        # Mask shifted left by one (two zeros appended): zeroes the stop token and padding.
        shifted = torch.cat([masks[:, 1:], masks.new_zeros(n, 2)], 1).to(noisy_seq.dtype)
        noisy_seq = (noisy_seq.view(n, -1) * shifted)[:, :length]
        keep_noise = torch.rand(noisy_seq.shape, generator=generator, device=seq.device) < self.p
        new_seq = torch.where(keep_noise, noisy_seq.to(seq.dtype), seq)

        out = dict(batch)
        out["bbox_flat"] = new_bbox
        out["polylines"] = new_seq
        return out
