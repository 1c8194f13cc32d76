"""Data-pipeline transforms of this baseline that need no multi-view image layout.

``CustomParameterizeLane`` turns ``results['gt_lc']`` (n lanes of m points, 3D) into the
flat Bezier control points ``(n, n_control·3)`` float32 the lane head regresses. The
published config writes ``method='bezier_Endpointfixed', method_para=dict(n_control=5)``;
``n_control=5`` given directly is accepted as well.
"""

from __future__ import annotations

from typing import Any

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
