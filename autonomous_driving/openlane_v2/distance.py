"""Distances of the OpenLane-V2 metric (driving_openlane_params.md §7.1).

Lanes are ``(n, 3)`` polylines in ego metres, traffic elements ``[[x1, y1], [x2, y2]]``
pixel boxes. ``pairwise`` builds the ``(G, P)`` float64 matrix the AP consumes: every
entry starts at 1024 and only the entries a mask allows are computed, each multiplied by
the ground truth's relaxation factor when ``relax`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial.distance import cdist

UNCOMPUTED = 1024.0  # the published fill for pairs that were never compared


def _as_lane(lane: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(lane, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] not in (2, 3):
        raise ValueError(f"{name}: expected an (n >= 1, 2 or 3) polyline, got shape {arr.shape}")
    return arr


def frechet_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Discrete Fréchet distance (Eiter & Mannila) with the Euclidean point metric, the
    quantity ``similaritymeasures.frechet_dist(p, q, p=2)`` returns. Directed: a lane and
    its reverse are far apart."""
    return float(frechet_batch(_as_lane(p, "p")[None], _as_lane(q, "q")[None])[0])


def frechet_batch(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Discrete Fréchet distances of K curve pairs at once: ``p (K, n, d)``, ``q (K, m, d)``
    -> ``(K,)``. The dynamic programme runs over the (n, m) grid with the K pairs as the
    vector dimension, so a frame's hundreds of lane pairs cost n·m numpy steps."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.ndim != 3 or q.ndim != 3 or p.shape[0] != q.shape[0] or p.shape[2] != q.shape[2]:
        raise ValueError(f"frechet_batch: expected p (K, n, d) and q (K, m, d), got {p.shape} and {q.shape}")
    if p.shape[1] == 0 or q.shape[1] == 0:
        raise ValueError("frechet_batch: curves need at least one point")
    d = np.linalg.norm(p[:, :, None, :] - q[:, None, :, :], axis=-1)  # (K, n, m)
    n, m = d.shape[1:]
    ca = np.empty_like(d)
    ca[:, 0, 0] = d[:, 0, 0]
    for j in range(1, m):
        ca[:, 0, j] = np.maximum(ca[:, 0, j - 1], d[:, 0, j])
    for i in range(1, n):
        ca[:, i, 0] = np.maximum(ca[:, i - 1, 0], d[:, i, 0])
        for j in range(1, m):
            best = np.minimum(np.minimum(ca[:, i - 1, j], ca[:, i - 1, j - 1]), ca[:, i, j - 1])
            ca[:, i, j] = np.maximum(best, d[:, i, j])
    return ca[:, n - 1, m - 1]


def chamfer_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric mean Chamfer distance ``½(mean_p min_q ‖p−q‖ + mean_q min_p ‖p−q‖)``."""
    d = cdist(_as_lane(p, "p"), _as_lane(q, "q"))
    return float(0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean()))


def chamfer_matrix(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> np.ndarray:
    """``(G, P)`` Chamfer distances of every ground-truth / prediction lane pair, from one
    ``cdist`` over all points and segment-wise reductions (lanes may differ in length)."""
    gts = [_as_lane(g, f"gts[{i}]") for i, g in enumerate(gts)]
    preds = [_as_lane(p, f"preds[{j}]") for j, p in enumerate(preds)]
    if not gts or not preds:
        return np.zeros((len(gts), len(preds)))
    g_len = np.array([len(g) for g in gts])
    p_len = np.array([len(p) for p in preds])
    g_start = np.concatenate([[0], np.cumsum(g_len)[:-1]])
    p_start = np.concatenate([[0], np.cumsum(p_len)[:-1]])
    d = cdist(np.concatenate(gts), np.concatenate(preds))  # (ΣG points, ΣP points)
    g_to_p = np.add.reduceat(np.minimum.reduceat(d, p_start, axis=1), g_start, axis=0) / g_len[:, None]
    p_to_g = np.add.reduceat(np.minimum.reduceat(d, g_start, axis=0), p_start, axis=1) / p_len[None, :]
    return 0.5 * (g_to_p + p_to_g)


def iou_distance(gt: np.ndarray, pred: np.ndarray) -> float:
    """``1 − IoU`` of two ``[[x1, y1], [x2, y2]]`` boxes, no eps (as published)."""
    return float(iou_distance_matrix([gt], [pred])[0, 0])


def iou_distance_matrix(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> np.ndarray:
    """``(G, P)`` IoU distances. Published arithmetic: ``inter = max(min x2 − max x1, 0) ·
    max(min y2 − max y1, 0)``, ``union = area_g + area_p − inter``, no eps, so two
    zero-area boxes give NaN (which then never matches)."""
    g = np.asarray(gts, dtype=np.float64).reshape(-1, 2, 2)
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 2, 2)
    if len(g) != len(gts) or len(p) != len(preds):
        raise ValueError("iou_distance_matrix: every box must be [[x1, y1], [x2, y2]]")
    gx1, gy1, gx2, gy2 = (g[:, i, j][:, None] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    px1, py1, px2, py2 = (p[:, i, j][None, :] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    inter = np.maximum(np.minimum(gx2, px2) - np.maximum(gx1, px1), 0) * np.maximum(
        np.minimum(gy2, py2) - np.maximum(gy1, py1), 0
    )
    union = (gx2 - gx1) * (gy2 - gy1) + (px2 - px1) * (py2 - py1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - inter / union


def relaxation_factor(gts: Sequence[np.ndarray]) -> np.ndarray:
    """``max(0.5, 1 − 0.005·ego_dist)`` per ground-truth lane, ``ego_dist`` being the 3D
    distance from the ego origin to the lane's nearest point: far lanes get up to half
    the distance forgiven."""
    ego = np.array([np.linalg.norm(_as_lane(g, f"gts[{i}]"), axis=1).min() for i, g in enumerate(gts)])
    return np.maximum(0.5, 1.0 - 0.005 * ego) if len(ego) else np.zeros(0)


def pairwise(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    fn: Callable[[np.ndarray, np.ndarray], float],
    mask: np.ndarray | None = None,
    relax: bool = False,
) -> np.ndarray:
    """The published ``pairwise``: ``D[i, j] = fn(gt_i, pred_j)·factor_i`` where ``mask``
    allows it, 1024 elsewhere; ``factor_i`` is the relaxation when ``relax``, else 1."""
    out = np.full((len(gts), len(preds)), UNCOMPUTED, dtype=np.float64)
    if mask is not None and np.shape(mask) != out.shape:
        raise ValueError(f"pairwise: mask shape {np.shape(mask)} != (G, P) = {out.shape}")
    factor = relaxation_factor(gts) if relax else np.ones(len(gts))
    for i, g in enumerate(gts):
        for j, p in enumerate(preds):
            if mask is None or mask[i, j]:
                out[i, j] = fn(g, p) * factor[i]
    return out


CHAMFER_GATE = 3.0  # Fréchet is only computed where the relaxed Chamfer distance is below this


def lane_distance_matrix(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> np.ndarray:
    """The lane matrix of DET_l: relaxed discrete Fréchet where the relaxed Chamfer
    distance is < 3.0, 1024 elsewhere. Same values as ``pairwise(frechet, mask=pairwise(
    chamfer, relax) < 3, relax)``, computed in batches of equal-length pairs."""
    out = np.full((len(gts), len(preds)), UNCOMPUTED, dtype=np.float64)
    if not len(gts) or not len(preds):
        return out
    factor = relaxation_factor(gts)
    mask = chamfer_matrix(gts, preds) * factor[:, None] < CHAMFER_GATE
    gi, pj = np.nonzero(mask)
    shapes = {}
    for i, j in zip(gi.tolist(), pj.tolist()):
        shapes.setdefault((len(gts[i]), len(preds[j])), []).append((i, j))
    for pairs in shapes.values():
        ii = [i for i, _ in pairs]
        jj = [j for _, j in pairs]
        # Argument order as published (prediction first); the distance is symmetric anyway.
        p = np.stack([np.asarray(preds[j], dtype=np.float64) for j in jj])
        g = np.stack([np.asarray(gts[i], dtype=np.float64) for i in ii])
        out[ii, jj] = frechet_batch(p, g) * factor[ii]
    return out
