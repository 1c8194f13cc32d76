"""``MultiViewDataPreprocessor``: batches multi-camera, multi-frame samples for the BEV models."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseDataPreprocessor


@MODELS.register_module()
class MultiViewDataPreprocessor(BaseDataPreprocessor):
    """Stack ``inputs['img']`` (per sample (Q, N, 3, H, W)) into a float32 (B, Q, N, 3, H, W)
    batch on the model's device: optional BGR→RGB and ``(x - mean) / std``, zero (``pad_value``)
    outside each camera's ``img_shape``, bottom/right padding to a multiple of
    ``pad_size_divisor``; writes the padded ``pad_shape`` into every frame meta
    (``data_sample.metainfo['img_metas']``). Data samples are otherwise passed through.

    A sample normalised in the pipeline (``NormalizeMultiviewImage`` recorded ``img_norm_cfg``)
    is not normalised again; a pipeline mean/std that disagrees with this one is refused.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bgr_to_rgb: bool = False,
        pad_size_divisor: int = 32,
        pad_value: float = 0.0,
        non_blocking: bool = False,
    ):
        super().__init__(non_blocking)
        if (mean is None) != (std is None):
            raise ValueError("MultiViewDataPreprocessor: give both mean and std, or neither")
        if mean is not None and (len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std)):
            raise ValueError(
                f"MultiViewDataPreprocessor: mean/std need 3 values, std non-zero; got {mean}, {std}"
            )
        if pad_size_divisor < 1:
            raise ValueError(
                f"MultiViewDataPreprocessor: pad_size_divisor must be >= 1, got {pad_size_divisor}"
            )
        self._normalize = mean is not None
        if self._normalize:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), False)
        self.bgr_to_rgb = bgr_to_rgb
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value

    def _pipeline_normalised(self, metas: list[dict]) -> bool:
        cfgs = [m.get("img_norm_cfg") for m in metas]
        if all(c is None for c in cfgs):
            return False
        if any(c is None for c in cfgs):
            raise ValueError(
                "MultiViewDataPreprocessor: some frames of a sample were normalised in the pipeline "
                "and some not"
            )
        if self._normalize:
            for c in cfgs:
                same = (
                    np.allclose(c["mean"], self.mean.flatten().cpu().numpy())
                    and np.allclose(c["std"], self.std.flatten().cpu().numpy())
                    and bool(c.get("to_rgb")) == self.bgr_to_rgb
                )
                if not same:
                    raise ValueError(
                        f"MultiViewDataPreprocessor: the pipeline normalised with {c} but the data "
                        f"preprocessor is set to mean={self.mean.flatten().tolist()}, std="
                        f"{self.std.flatten().tolist()}, bgr_to_rgb={self.bgr_to_rgb}: normalise once"
                    )
        return True

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        imgs = data["inputs"]["img"]
        imgs = list(imgs) if isinstance(imgs, torch.Tensor) else imgs
        samples = data.get("data_samples")
        if samples is not None and len(samples) != len(imgs):
            raise ValueError(f"MultiViewDataPreprocessor: {len(imgs)} images but {len(samples)} data samples")
        out = []
        for i, img in enumerate(imgs):
            if img.dim() != 5 or img.shape[2] != 3:
                raise ValueError(
                    f"MultiViewDataPreprocessor: sample {i} img must be (Q, N, 3, H, W), got "
                    f"{tuple(img.shape)}"
                )
            metas = samples[i].metainfo.get("img_metas", []) if samples is not None else []
            x = img.float()
            if not self._pipeline_normalised(metas):
                if self.bgr_to_rgb:
                    x = x[:, :, [2, 1, 0]]
                if self._normalize:
                    x = (x - self.mean) / self.std
                # padding added before normalisation (PadMultiViewImage in the pipeline) ends as pad_value
                for q, meta in enumerate(metas):
                    for n, shape in enumerate(meta.get("img_shape", [])):
                        x[q, n, :, shape[0] :, :] = self.pad_value
                        x[q, n, :, :, shape[1] :] = self.pad_value
            out.append(x)
        height = max(x.shape[-2] for x in out)
        width = max(x.shape[-1] for x in out)
        d = self.pad_size_divisor
        height, width = math.ceil(height / d) * d, math.ceil(width / d) * d
        batch = torch.stack(
            [F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]), value=self.pad_value) for x in out]
        )
        if samples is not None:
            for sample, x in zip(samples, out, strict=True):
                for meta in sample.metainfo.get("img_metas", []):
                    meta["pad_shape"] = [(height, width, 3)] * x.shape[1]
        data["inputs"] = {**data["inputs"], "img": batch}
        return data
