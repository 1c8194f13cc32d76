"""Data-pipeline transforms of this baseline (mmdet ``TRANSFORMS``), on the multi-view
results layout of ``bev_common.transforms`` (``img`` a list of per-camera arrays, front
camera first; ``lidar2img`` / ``cam_intrinsic`` lists of matrices).

``ResizeFrontView`` resizes the portrait front image to the landscape size of the other
cameras (driving_openlane_params.md §1.2). ``CustomParameterizeLane`` turns
``results['gt_lc']`` (n lanes of m points, 3D) into the flat Bezier control points
``(n, n_control·3)`` float32 the lane head regresses. The published config writes
``method='bezier_Endpointfixed', method_para=dict(n_control=5)``; ``n_control=5`` given
directly is accepted as well.
"""

from __future__ import annotations

from typing import Any

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from . import bezier

METHODS = ("bezier_Endpointfixed",)


@TRANSFORMS.register_module()
class CustomParameterizeLane(BaseTransform):
    """Fit each ground-truth lane with the named parameterisation."""

    def __init__(self, method: str = "bezier_Endpointfixed", method_para: dict | None = None, **kwargs: Any):
        if method not in METHODS:
            raise ValueError(f"CustomParameterizeLane: method {method!r} is not one of {METHODS}")
        para = dict(method_para or {}, **kwargs)
        unknown = set(para) - {"n_control"}
        if unknown:
            raise ValueError(f"CustomParameterizeLane: unknown parameter(s) {sorted(unknown)} for {method}")
        self.method = method
        self.n_control = int(para.get("n_control", 5))

    def transform(self, results: dict) -> dict:
        if "gt_lc" not in results:
            raise KeyError("CustomParameterizeLane: results has no 'gt_lc' (the lanes, (n, m, 3))")
        results["gt_lc"] = bezier.parameterize_lanes(list(results["gt_lc"]), self.n_control)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r}, n_control={self.n_control})"


@TRANSFORMS.register_module()
class ResizeFrontView(BaseTransform):
    """Resize camera 0 from (H, W) to (W, H): the AV2 front camera's portrait 1550x2048 (WxH)
    image becomes 2048x1550 by an anisotropic bilinear resize (``mmcv.imresize(img, (H, W))``,
    not a rotation). ``w_scale = H/W``, ``h_scale = W/H``; ``scale_factor`` becomes the float32
    ``[w_s, h_s, w_s, h_s]`` of the sample, ``gt_te`` (front-image boxes) is multiplied by it
    and camera 0's ``lidar2img``, ``cam_intrinsic`` and ``cam2imgs`` get ``diag(w_s, h_s)``.

    As published, the swap happens whatever camera 0's orientation is; the pipeline expects
    the AV2 portrait front camera there."""

    def transform(self, results: dict) -> dict:
        imgs = results.get("img")
        if not isinstance(imgs, list) or not imgs:
            raise KeyError("ResizeFrontView: results['img'] must be the list of camera images, front first")
        h, w = imgs[0].shape[:2]
        imgs[0] = mmcv.imresize(imgs[0], (h, w))  # mmcv takes (w, h): the new width is the old height
        w_scale, h_scale = h / w, w / h
        scale = np.eye(4)
        scale[0, 0], scale[1, 1] = w_scale, h_scale
        for key in ("lidar2img", "cam_intrinsic", "cam2imgs"):
            if key in results:
                mats = list(results[key])
                m = np.asarray(mats[0], dtype=np.float64)
                mats[0] = scale[: m.shape[0], : m.shape[0]] @ m
                results[key] = mats
        shapes = list(results.get("img_shape", [img.shape for img in imgs]))
        shapes[0] = imgs[0].shape
        results["img_shape"] = shapes
        results["scale_factor"] = np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
        if "gt_te" in results:
            boxes = np.asarray(results["gt_te"], dtype=np.float32).reshape(-1, 4)
            results["gt_te"] = boxes * results["scale_factor"]
        return results
