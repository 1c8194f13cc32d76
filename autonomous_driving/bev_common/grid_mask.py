"""GridMask, the image augmentation of the published BEVFormer detectors
(driving_occupancy_params.md §2): in training, with probability ``prob``, every image and
channel of the batch is multiplied by one shared mask of stripes.

The random stream is numpy's global RNG, drawn in the published order (``rand`` for the
probability, then ``randint`` for the period, the two phases and the rotation), so a seeded
run draws the same masks. The published module moves its mask with ``.cuda()``; here the
mask follows the input's device and dtype."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn


class GridMask(nn.Module):
    """``GridMask(use_h, use_w, rotate=1, offset=False, ratio=0.5, mode=0, prob=1.0)``.

    - ``use_h`` / ``use_w``: draw horizontal / vertical stripes of width ``l = ratio * d``
      every ``d`` pixels (``d`` uniform in [2, h)).
    - ``rotate``: the mask is rotated by ``randint(rotate)`` degrees (1: never).
    - ``mode=1`` keeps the stripes and zeroes the squares between them; ``mode=0`` the reverse.
    - ``offset``: fill the masked-out pixels with uniform noise in [-1, 1) instead of 0.
    - ``prob``: probability of masking a batch; ``set_prob`` ramps it per epoch.
    No parameters; identity in eval mode."""

    def __init__(
        self,
        use_h: bool,
        use_w: bool,
        rotate: int = 1,
        offset: bool = False,
        ratio: float = 0.5,
        mode: int = 0,
        prob: float = 1.0,
    ):
        super().__init__()
        if int(rotate) < 1:
            raise ValueError(f"rotate must be >= 1 (the mask turns by randint(rotate) degrees), got {rotate}")
        if mode not in (0, 1):
            raise ValueError(f"mode must be 0 (zero the stripes) or 1 (keep only the stripes), got {mode}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.use_h = use_h
        self.use_w = use_w
        self.rotate = int(rotate)
        self.offset = offset
        self.ratio = ratio
        self.mode = mode
        self.st_prob = prob
        self.prob = prob
        self.fp16_enable = False

    def set_prob(self, epoch: int, max_epoch: int) -> None:
        self.prob = self.st_prob * epoch / max_epoch

    def extra_repr(self) -> str:
        return (
            f"use_h={self.use_h}, use_w={self.use_w}, rotate={self.rotate}, offset={self.offset}, "
            f"ratio={self.ratio}, mode={self.mode}, prob={self.prob}"
        )

    def _mask(self, h: int, w: int) -> np.ndarray:
        """One (h, w) float32 mask, 1 where the image is kept (before ``mode``)."""
        hh, ww = int(1.5 * h), int(1.5 * w)  # drawn larger so that a rotation leaves no empty corners
        d = np.random.randint(2, h)  # published: the upper bound is h, not min(h, w)
        length = min(max(int(d * self.ratio + 0.5), 1), d - 1)
        mask = np.ones((hh, ww), np.float32)
        st_h = np.random.randint(d)
        st_w = np.random.randint(d)
        if self.use_h:
            for i in range(hh // d):
                start = d * i + st_h
                mask[start : min(start + length, hh), :] = 0
        if self.use_w:
            for i in range(ww // d):
                start = d * i + st_w
                mask[:, start : min(start + length, ww)] = 0
        angle = np.random.randint(self.rotate)
        if angle:
            mask = np.asarray(Image.fromarray(np.uint8(mask)).rotate(angle), dtype=np.float32)
        top, left = (hh - h) // 2, (ww - w) // 2
        return mask[top : top + h, left : left + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n, c, h, w); returns the masked images (the input itself when not applied)."""
        if np.random.rand() > self.prob or not self.training:
            return x
        if x.dim() != 4:
            raise ValueError(f"GridMask expects images of shape (n, c, h, w), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        if h < 3:
            raise ValueError(f"GridMask needs images at least 3 pixels high (period in [2, h)), got h={h}")
        mask = torch.from_numpy(self._mask(h, w).copy()).to(device=x.device, dtype=x.dtype)
        if self.mode == 1:
            mask = 1 - mask
        flat = x.reshape(n * c, h, w)  # one mask shared by every image and channel
        if self.offset:
            noise = torch.from_numpy(2 * (np.random.rand(h, w) - 0.5)).to(device=x.device, dtype=x.dtype)
            out = flat * mask + noise * (1 - mask)
        else:
            out = flat * mask
        return out.view(n, c, h, w)
