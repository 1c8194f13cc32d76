"""F-score for 3D lanes (``LaneEval.bench_one_submit``, driving_openlane_params.md §7.4).

Lanes are resampled as ``y(x), z(x)`` at x = −50, −49, …, 49 m; a ground-truth / prediction
pair costs the summed yz distance over the samples (1.5 m where only one lane is visible),
lanes are matched one-to-one by an exact min-cost flow (networkx's network simplex, in
place of ortools' ``SimpleMinCostFlow``), and a matched pair counts towards recall /
precision when at least 75 % of the ground truth's / prediction's visible samples are
within 1.5 m. All predicted lanes are used, whatever their confidence.

Where costs tie, any optimal assignment is as exact as ortools' but may be a different
one, which can move ``r_lane`` / ``p_lane`` by a few counts (the README lists this).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy.interpolate import interp1d
from scipy.optimize import linear_sum_assignment

X_SAMPLES = np.linspace(-50, 50, 100, endpoint=False)
DIST_TH = 1.5
RATIO_TH = 0.75
MAX_COST = DIST_TH * len(X_SAMPLES)  # 150: a matched pair costing this much or more never counts
SOLVERS = ("networkx", "scipy")


def resample_lane(lane: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(yz (100, 2), visible (100,))`` of one lane, or None when the lane is dropped
    (fewer than 2 points, first x ≥ 49, last x ≤ −50, or at most one visible sample)."""
    lane = np.asarray(lane, dtype=np.float64)
    if lane.ndim != 2 or lane.shape[1] != 3:
        raise ValueError(f"resample_lane: expected an (n, 3) lane, got shape {lane.shape}")
    # The published filter reads the first and the last point's x as given (lane direction).
    if len(lane) < 2 or not (lane[0, 0] < X_SAMPLES[-1] and lane[-1, 0] > X_SAMPLES[0]):
        return None
    x = lane[:, 0]
    visible = (X_SAMPLES >= x.min()) & (X_SAMPLES <= x.max())
    if visible.sum() <= 1:
        return None
    yz = interp1d(x, lane[:, 1:], axis=0, fill_value="extrapolate")(X_SAMPLES)  # sorts by x itself
    return yz, visible


def pair_costs(gts: Sequence[tuple], preds: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Integer costs and matched-sample counts ``(G, P)`` of resampled lanes.

    Per sample ``d = ‖Δ(y, z)‖``, 0 where neither lane is visible and 1.5 where only one is;
    ``num_match = #(d < 1.5) − #(both invisible)``; ``cost = Σ d``, 1 if ``0 < cost < 1``
    else truncated to an integer (the flow solver needs integers)."""
    if not gts or not preds:
        return np.zeros((len(gts), len(preds)), np.int64), np.zeros((len(gts), len(preds)), np.int64)
    gyz = np.stack([g[0] for g in gts])[:, None]
    gvis = np.stack([g[1] for g in gts])[:, None]
    pyz = np.stack([p[0] for p in preds])[None]
    pvis = np.stack([p[1] for p in preds])[None]
    d = np.linalg.norm(gyz - pyz, axis=-1)
    both_invisible = ~gvis & ~pvis
    d = np.where(gvis ^ pvis, DIST_TH, np.where(both_invisible, 0.0, d))
    num_match = (d < DIST_TH).sum(-1) - both_invisible.sum(-1)
    total = d.sum(-1)
    cost = np.where((total > 0) & (total < 1), 1, np.trunc(total)).astype(np.int64)
    return cost, num_match


def min_cost_matching(cost: np.ndarray, solver: str = "networkx") -> list[tuple[int, int]]:
    """Exact minimum-cost one-to-one matching of ``min(G, P)`` pairs on an integer ``(G, P)``
    cost matrix.

    ``networkx``: the published flow network (source → gt, capacity 1 → pred, capacity 1
    at the pair cost → sink, capacity 1; supply ``min(G, P)``) solved by network simplex.
    Only each row's (G ≤ P) or column's (G > P) ``min(G, P)`` cheapest edges enter the
    network: that loses no optimum (an element matched outside its k cheapest partners
    always has a free one among them that costs no more), and makes it 2–4x faster.
    ``scipy``: ``linear_sum_assignment`` on the same costs, the same optimum value, about a
    thousand times faster (an optimum can differ where costs tie, as with any two solvers)."""
    if solver not in SOLVERS:
        raise ValueError(f"min_cost_matching: solver must be one of {SOLVERS}, got {solver!r}")
    cost = np.asarray(cost)
    if cost.ndim != 2 or not np.issubdtype(cost.dtype, np.integer):
        raise ValueError(f"min_cost_matching: need a 2-D integer cost matrix, got {cost.dtype} {cost.shape}")
    num_gt, num_pred = cost.shape
    supply = min(num_gt, num_pred)
    if supply == 0:
        return []
    if solver == "scipy":
        rows, cols = linear_sum_assignment(cost)
        return sorted(zip(rows.tolist(), cols.tolist()))
    if num_gt <= num_pred:
        keep = np.argsort(cost, axis=1, kind="stable")[:, :supply]
        edges = [(i, int(j)) for i in range(num_gt) for j in keep[i]]
    else:
        keep = np.argsort(cost, axis=0, kind="stable")[:supply]
        edges = [(int(i), j) for j in range(num_pred) for i in keep[:, j]]
    # Nodes: 0 source, 1 sink, 2 + i ground truth i, 2 + G + j prediction j.
    graph = nx.DiGraph()
    graph.add_node(0, demand=-supply)
    graph.add_node(1, demand=supply)
    graph.add_edges_from((0, 2 + i, {"capacity": 1, "weight": 0}) for i in range(num_gt))
    graph.add_edges_from((2 + num_gt + j, 1, {"capacity": 1, "weight": 0}) for j in range(num_pred))
    graph.add_edges_from(
        (2 + i, 2 + num_gt + j, {"capacity": 1, "weight": int(cost[i, j])}) for i, j in edges
    )
    flow = nx.min_cost_flow(graph)
    return sorted((i, v - 2 - num_gt) for i in range(num_gt) for v, f in flow[2 + i].items() if f > 0)


def frame_counts(
    gt_lanes: Sequence[np.ndarray], pred_lanes: Sequence[np.ndarray], solver: str = "networkx"
) -> dict[str, int]:
    """One frame's ``r_lane``, ``p_lane``, ``match_num``, ``cnt_gt`` and ``cnt_pred``
    (the counts are of the lanes that survive the filters)."""
    gts = [r for r in map(resample_lane, gt_lanes) if r is not None]
    preds = [r for r in map(resample_lane, pred_lanes) if r is not None]
    cost, num_match = pair_costs(gts, preds)
    counts = {"r_lane": 0, "p_lane": 0, "match_num": 0, "cnt_gt": len(gts), "cnt_pred": len(preds)}
    for i, j in min_cost_matching(cost, solver):
        if cost[i, j] >= MAX_COST:
            continue
        counts["match_num"] += 1
        counts["r_lane"] += int(num_match[i, j] / gts[i][1].sum() >= RATIO_TH)
        counts["p_lane"] += int(num_match[i, j] / preds[j][1].sum() >= RATIO_TH)
    return counts


def f_score(
    gt_frames: Sequence[Sequence[np.ndarray]],
    pred_frames: Sequence[Sequence[np.ndarray]],
    solver: str = "networkx",
) -> dict[str, float]:
    """``{score, precision, recall}`` over frames: ``R = Σ r_lane / Σ cnt_gt``,
    ``P = Σ p_lane / Σ cnt_pred`` (1e-6 added only to a zero denominator),
    ``F = 2RP / (R + P)``, 0 when R + P = 0 (the formula is undefined there)."""
    if len(gt_frames) != len(pred_frames):
        raise ValueError(f"f_score: {len(gt_frames)} ground-truth, {len(pred_frames)} prediction frames")
    total = {"r_lane": 0, "p_lane": 0, "cnt_gt": 0, "cnt_pred": 0}
    for gt_lanes, pred_lanes in zip(gt_frames, pred_frames):
        counts = frame_counts(gt_lanes, pred_lanes, solver)
        for key in total:
            total[key] += counts[key]
    recall = total["r_lane"] / (total["cnt_gt"] or 1e-6)
    precision = total["p_lane"] / (total["cnt_pred"] or 1e-6)
    score = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return {"score": float(score), "precision": float(precision), "recall": float(recall)}
