"""Bezier lane parameterisation (driving_openlane_params.md §1.2, §3.4), numpy and torch.

Ground truth: ``bezier_Endpointfixed`` fits ``n_control`` control points to each lane with
both end points fixed (the method name of the published ``CustomParameterizeLane``).
Prediction: ``decode_bezier`` samples the curve at 11 evenly spaced parameters, the
published ``format_preds`` decoding.
"""

from __future__ import annotations

import sys
from math import comb
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


def bernstein_matrix(t: np.ndarray, n_control: int) -> np.ndarray:
    """``A[i, j] = C(k, j)·(1 − t_i)^(k − j)·t_i^j`` with degree ``k = n_control − 1``, float64."""
    if n_control < 2:
        raise ValueError(f"bernstein_matrix: n_control must be >= 2, got {n_control}")
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    k = n_control - 1
    j = np.arange(n_control)
    coeff = np.array([comb(k, int(x)) for x in j], dtype=np.float64)
    return coeff * (1 - t) ** (k - j) * t**j


def bezier_Endpointfixed(lane: np.ndarray, n_control: int = 5) -> np.ndarray:  # noqa: N802 (published name)
    """Control points ``(n_control, d)`` of one lane ``(m, d)``, m >= 2.

    The parameter is uniform in point index (``t_i = i/(m − 1)``, not arclength); the first
    and last control points are the lane's end points, the interior ones the minimum-norm
    least-squares fit (``np.linalg.lstsq``, float64) on the m − 2 interior points only."""
    pts = np.asarray(lane, dtype=np.float64)
    if pts.ndim != 2 or len(pts) < 2:
        raise ValueError(f"bezier_Endpointfixed: expected an (m >= 2, d) lane, got shape {pts.shape}")
    m = len(pts)
    a = bernstein_matrix(np.arange(m) / (m - 1), n_control)
    rhs = pts[1:-1] - a[1:-1, :1] @ pts[:1] - a[1:-1, -1:] @ pts[-1:]
    ctrl = np.empty((n_control, pts.shape[1]), dtype=np.float64)
    ctrl[0], ctrl[-1] = pts[0], pts[-1]
    if n_control > 2:
        if m > 2:
            ctrl[1:-1] = np.linalg.lstsq(a[1:-1, 1:-1], rhs, rcond=None)[0]
        else:  # no interior point: the minimum-norm solution of an empty system
            ctrl[1:-1] = 0.0
    return ctrl


def parameterize_lanes(lanes: list[np.ndarray] | np.ndarray, n_control: int = 5) -> np.ndarray:
    """``gt_lc``: ``(n, n_control·3)`` float32 rows ``[c0x, c0y, c0z, c1x, …]``; an empty
    lane list gives shape ``(0,)`` as published (the head handles it)."""
    if len(lanes) == 0:
        return np.zeros((0,), dtype=np.float32)
    return np.stack([bezier_Endpointfixed(lane, n_control).reshape(-1) for lane in lanes]).astype(np.float32)


def decode_bezier(ctrl: ArrayT, n_points: int = 11) -> ArrayT:
    """Sample Bezier curves at ``t = i/(n_points − 1)``: ``ctrl (n, K·3)`` or ``(n, K, 3)``
    -> ``(n, n_points, 3)``, with the float32 Bernstein matrix of the published decoding.
    Works on numpy arrays and (differentiably) on torch tensors."""
    if ctrl.ndim == 2:
        if ctrl.shape[1] % 3:
            raise ValueError(f"decode_bezier: flat control points must be (n, K·3), got {tuple(ctrl.shape)}")
        ctrl = ctrl.reshape(ctrl.shape[0], -1, 3)
    if ctrl.ndim != 3 or ctrl.shape[2] != 3:
        raise ValueError(f"decode_bezier: expected (n, K, 3) control points, got {tuple(ctrl.shape)}")
    a = bernstein_matrix(np.linspace(0, 1, n_points), ctrl.shape[1]).astype(np.float32)
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; the metric never needs it
    if torch is not None and isinstance(ctrl, torch.Tensor):
        return torch.einsum("ij,njk->nik", torch.from_numpy(a).to(ctrl), ctrl)
    return np.einsum("ij,njk->nik", a, ctrl)
