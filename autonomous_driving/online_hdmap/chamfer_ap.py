"""Chamfer AP of the Online-HD-Map challenge, the arithmetic only (driving_hdmap_params.md §7).

Per class and threshold: resample every line at a fixed 0.3 m, match each prediction (in
score order) to its nearest ground-truth line if the Chamfer distance is within the
threshold and that line is still free, accumulate over frames, and integrate the
precision/recall curve VOC-'area' style. File reading and the table are in ``vector_eval``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from scipy.spatial.distance import cdist

SAMPLE_DIST = 0.3  # metres between resampled points
THRESHOLDS = (0.5, 1.0, 1.5)  # Chamfer thresholds in metres
CAT2ID = {"ped_crossing": 0, "divider": 1, "boundary": 2}
ID2CAT = {v: k for k, v in CAT2ID.items()}


def _as_polyline(vector: object, what: str) -> np.ndarray:
    line = np.asarray(vector, dtype=np.float64)
    if line.ndim != 2 or line.shape[1] != 2 or line.shape[0] < 2:
        raise ValueError(
            f"{what}: expected a polyline of shape (N >= 2, 2) in metres, got shape {line.shape}"
        )
    if not np.isfinite(line).all():
        raise ValueError(f"{what}: the polyline holds non-finite coordinates")
    return line


def interp_fixed_dist(vector: object, sample_dist: float = SAMPLE_DIST) -> np.ndarray:
    """Points every ``sample_dist`` metres along the polyline, both endpoints included.

    Distances are ``[0] + arange(sample_dist, L, sample_dist) + [L]`` as published: when
    ``L`` is a multiple of the step, float rounding in ``arange`` may or may not produce a
    point right next to the end, and a zero-length line gives its point twice.
    """
    if not sample_dist > 0:
        raise ValueError(f"sample_dist must be > 0, got {sample_dist}")
    line = shapely.LineString(_as_polyline(vector, "interp_fixed_dist(vector)"))
    length = line.length
    distances = np.concatenate([[0.0], np.arange(sample_dist, length, sample_dist), [length]])
    # Vectorised GEOS interpolation: the same call as LineString.interpolate per distance.
    return shapely.get_coordinates(shapely.line_interpolate_point(line, distances))


def chamfer_distance(line1: np.ndarray, line2: np.ndarray) -> float:
    """Symmetric Chamfer distance of two point sets: the mean of the two mean
    nearest-neighbour distances (sum / count, as published)."""
    dist = cdist(line1, line2, "euclidean")
    d12 = dist.min(-1).sum() / len(line1)
    d21 = dist.min(-2).sum() / len(line2)
    return float((d12 + d21) / 2)


def instance_match(
    pred_lines: Sequence[np.ndarray],
    scores: np.ndarray,
    gt_lines: Sequence[np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """TP/FP flags (float32, one pair per threshold) of one frame and one class.

    Lines are already resampled. Each prediction, visited by descending score, is a TP
    iff its nearest GT (first minimum) is within ``thr`` (inclusive) and not yet covered;
    there is no fallback to the second-nearest GT. Without GT every prediction is an FP.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num_preds, num_gts = len(pred_lines), len(gt_lines)
    if scores.shape != (num_preds,):
        raise ValueError(f"scores: expected shape ({num_preds},), got {scores.shape}")
    empty = np.zeros(num_preds, dtype=np.float32)
    if num_gts == 0 or num_preds == 0:
        fp = np.ones(num_preds, dtype=np.float32) if num_gts == 0 else empty
        return [(empty.copy(), fp.copy()) for _ in thresholds]

    dist = np.array([[chamfer_distance(p, g) for g in gt_lines] for p in pred_lines])
    dist_min = dist.min(axis=1)
    nearest = dist.argmin(axis=1)
    # np.argsort's default (unstable) sort as published: the order among equal scores is
    # numpy's, which can differ between numpy builds/CPUs; only exact ties are affected.
    order = np.argsort(-scores)
    out = []
    for thr in thresholds:
        tp = np.zeros(num_preds, dtype=np.float32)
        fp = np.zeros(num_preds, dtype=np.float32)
        covered = np.zeros(num_gts, dtype=bool)
        for i in order:
            if dist_min[i] <= thr and not covered[nearest[i]]:
                covered[nearest[i]] = True
                tp[i] = 1
            else:
                fp[i] = 1
        out.append((tp, fp))
    return out


def average_precision(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """VOC 'area' AP: precision made non-increasing from the right, summed over the
    recall steps, with the curve closed by (0, 0) and (1, 0)."""
    recalls = np.asarray(recalls, dtype=np.float64)
    precisions = np.asarray(precisions, dtype=np.float64)
    if recalls.ndim != 1 or recalls.shape != precisions.shape:
        raise ValueError(
            f"recalls and precisions must be 1-d of one shape, got {recalls.shape} and {precisions.shape}"
        )
    mrec = np.concatenate([[0.0], recalls, [1.0]])
    mpre = np.concatenate([[0.0], precisions, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def accumulate_ap(tp_fp_score: Sequence[np.ndarray], num_gts: int) -> float:
    """AP of one class at one threshold from the per-frame ``(n_i, 3)`` rows
    ``[tp, fp, score]`` (frames in GT-token order)."""
    if num_gts < 0:
        raise ValueError(f"num_gts must be >= 0, got {num_gts}")
    rows = np.vstack(
        [np.asarray(r, dtype=np.float64).reshape(-1, 3) for r in tp_fp_score] or [np.zeros((0, 3))]
    )
    order = np.argsort(-rows[:, 2])  # default (unstable) sort, as published
    tp = np.cumsum(rows[order, 0])
    fp = np.cumsum(rows[order, 1])
    eps = np.finfo(np.float32).eps
    recalls = tp / np.maximum(num_gts, eps)
    precisions = tp / np.maximum(tp + fp, eps)
    return average_precision(recalls, precisions)


def evaluate_frame(
    pred_vectors: Sequence[object],
    scores: Sequence[float],
    gt_vectors: Sequence[object],
    thresholds: Sequence[float] = THRESHOLDS,
    sample_dist: float = SAMPLE_DIST,
) -> dict[float, np.ndarray]:
    """Resample one frame's lines of one class and match them: ``{thr: (n_pred, 3)}``
    rows ``[tp, fp, score]``."""
    pred_lines = [interp_fixed_dist(v, sample_dist) for v in pred_vectors]
    gt_lines = [interp_fixed_dist(v, sample_dist) for v in gt_vectors]
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    flags = instance_match(pred_lines, scores_arr, gt_lines, thresholds)
    return {
        thr: np.hstack([tp[:, None], fp[:, None], scores_arr[:, None]])
        for thr, (tp, fp) in zip(thresholds, flags)
    }
