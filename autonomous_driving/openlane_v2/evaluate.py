"""The OpenLane-V2 score (OLS) of the bundled devkit v0.1.0, our own implementation
(driving_openlane_params.md §7.2–7.3; the F-score is in ``f_score``).

``OLS = mean(DET_l, DET_t, √TOP_ll, √TOP_lt)``:

- DET_l: 11-point AP of the lanes with the relaxed discrete Fréchet distance, mean over
  the thresholds 1, 2, 3 m;
- DET_t: 11-point AP of the traffic elements with the IoU distance at 0.75, per attribute
  (all 13), averaged;
- TOP_ll / TOP_lt: the per-vertex AP of the predicted lane→lane / lane–element graph after
  the detection matches, pooled over ten confidence cuts, thresholds and frames (v0.1.0
  rules: the ``r`` loop and the ``1 − gt`` fill for unmatched pairs).

Deliberate differences from v0.1.0, each a bookkeeping fix (see the README's list):

- ``_inject``'s confidence cuts are read from the *sorted* confidences; v0.1.0 indexes the
  unsorted list with sorted positions. ``published_inject_quirk=True`` restores that.
- Ties in confidence are broken by list order (stable sorts) everywhere; v0.1.0 uses
  numpy's default quicksort, whose order on ties depends on the array length and the
  numpy build (it is stable only for short arrays).
- A TOP score with no frame to score (no ground-truth lane anywhere) is 0, as in devkit
  2.1.0; v0.1.0 raises on the empty ``np.hstack``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .distance import iou_distance_matrix, lane_distance_matrix
from .f_score import f_score

THRESHOLDS_FRECHET = (1.0, 2.0, 3.0)
THRESHOLDS_IOU = (0.75,)
THRESHOLD_RELATIONSHIP_CONFIDENCE = 0.5
NUM_ATTRIBUTES = 13
NUM_CONFIDENCE_CUTS = 10  # recall deciles 10 %, 20 %, …, 100 %
EPS = float(np.finfo(np.float32).eps)  # the published ε in the recall / precision divisions
RECALL_POINTS = np.linspace(0.0, 1.0, 11)  # 11-point AP; note 0.3, 0.6, 0.7 are 0.30000000000000004 etc.


def tpfp(distances: np.ndarray, confidence: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """One frame's true / false positives (``_tpfp``), in prediction-list order.

    Each prediction only ever competes for its nearest ground truth ``g* = argmin_g D[g, p]``
    (the first minimum); in decreasing confidence it is a TP if ``D[g*, p] < threshold``
    (strict) and ``g*`` is still uncovered, else an FP. Returns ``tp``, ``fp`` (bool) and
    ``idx_match_gt`` (float, NaN where unmatched)."""
    d = np.asarray(distances, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if d.ndim != 2 or d.shape[1] != len(conf):
        raise ValueError(f"tpfp: distances must be (G, P={len(conf)}), got {d.shape}")
    num_pred = len(conf)
    tp = np.zeros(num_pred, dtype=bool)
    idx_match_gt = np.full(num_pred, np.nan)
    if num_pred == 0 or d.shape[0] == 0:
        return tp, ~tp, idx_match_gt
    dmin = d.min(axis=0)
    nearest = d.argmin(axis=0)
    order = np.argsort(-conf, kind="stable")
    close = order[dmin[order] < threshold]  # candidates, most confident first
    # The first (most confident) candidate of each ground truth covers it; later ones are FPs.
    _, first = np.unique(nearest[close], return_index=True)
    winners = close[first]
    tp[winners] = True
    idx_match_gt[winners] = nearest[winners]
    return tp, ~tp, idx_match_gt


def ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """``mean_r max(precision[recall ≥ r])`` over r = 0, 0.1, …, 1 (0 where none reaches r)."""
    points = [precision[recall >= r].max() if np.any(recall >= r) else 0.0 for r in RECALL_POINTS]
    return float(np.mean(points))


def average_precision(
    tps: Sequence[np.ndarray], fps: Sequence[np.ndarray], confidences: Sequence[np.ndarray], num_gt: int
) -> float:
    """AP over frames (``_AP``): the frames' TP/FP flags pooled and sorted by confidence."""
    tp = np.concatenate([np.asarray(t, dtype=bool) for t in tps]) if tps else np.zeros(0, bool)
    fp = np.concatenate([np.asarray(f, dtype=bool) for f in fps]) if fps else np.zeros(0, bool)
    conf = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in confidences]) if confidences \
        else np.zeros(0)
    if not len(tp) == len(fp) == len(conf):
        raise ValueError(f"average_precision: {len(tp)} tp, {len(fp)} fp, {len(conf)} confidences")
    if len(conf) == 0 and num_gt == 0:
        return 1.0  # nothing to find and nothing claimed
    order = np.argsort(-conf, kind="stable")
    tp_cum = np.cumsum(tp[order])
    fp_cum = np.cumsum(fp[order])
    recall = tp_cum / max(num_gt, EPS)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, EPS)
    return ap_11_point(recall, precision)


def confidence_cuts(
    tp: np.ndarray, confidence: np.ndarray, num_gt: int, published_inject_quirk: bool = False
) -> np.ndarray:
    """The ten per-frame confidence cuts of ``_inject``: the confidence at which the frame's
    recall reaches each decile (``np.percentile(..., method='closest_observation')`` of the
    recall curve, then the last sorted position holding that recall value)."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if len(conf) == 0:
        return np.zeros(0)
    order = np.argsort(-conf, kind="stable")
    recall = np.cumsum(np.asarray(tp, dtype=bool)[order]) / max(num_gt, EPS)
    taken = np.percentile(recall, np.arange(10, 101, 10), method="closest_observation")
    last_position = {}
    for k, value in enumerate(recall.tolist()):
        last_position[value] = k
    positions = [last_position[value] for value in taken.tolist()]
    # v0.1.0 indexes the unsorted list with sorted positions (a bookkeeping bug, kept behind a switch).
    return conf[positions] if published_inject_quirk else conf[order][positions]


def vertex_ap(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row AP of a predicted adjacency: row i's GT set ``{j: gt = 1}``, predicted set
    ``{j: pred > 0.5}`` ranked by ``pred``; 1 if both are empty, 0 if one is, otherwise
    ``Σ_k precision@k·hit_k / |GT|``. Ties keep column order."""
    gt = np.asarray(gt) == 1
    pred = np.asarray(pred, dtype=np.float64)
    predicted = pred > THRESHOLD_RELATIONSHIP_CONFIDENCE
    n_gt = gt.sum(axis=1)
    n_pred = predicted.sum(axis=1)
    order = np.argsort(np.where(predicted, -pred, np.inf), axis=1, kind="stable")
    hit = np.take_along_axis(gt & predicted, order, axis=1)
    precision_at_k = np.cumsum(hit, axis=1) / np.arange(1, gt.shape[1] + 1)
    ap = (precision_at_k * hit).sum(axis=1) / np.maximum(n_gt, 1)
    ap = np.where((n_gt == 0) | (n_pred == 0), 0.0, ap)
    return np.where((n_gt == 0) & (n_pred == 0), 1.0, ap)


def topology_ap(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``_AP_directed`` / ``_AP_undirected``: the per-vertex AP over rows (outgoing edges,
    or each lane's elements), then over columns (incoming, or each element's lanes)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"topology_ap: gt {gt.shape} and pred {pred.shape} must be the same 2-D shape")
    return np.concatenate([vertex_ap(gt, pred), vertex_ap(gt.T, pred.T)])


@dataclass
class _Matches:
    """What ``_inject`` keeps for one frame and threshold."""

    idx_match_gt: np.ndarray
    confidence: np.ndarray
    cuts: np.ndarray

    def gt_to_pred(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``(gt indices, prediction positions)`` of the matches kept at cut ``r``: the
        published ``{g: p for p, (g, c) in ... if c >= cut and g is not NaN}``."""
        if len(self.confidence) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keep = (self.confidence >= self.cuts[r]) & ~np.isnan(self.idx_match_gt)
        return self.idx_match_gt[keep].astype(np.int64), np.flatnonzero(keep)


def _matched_matrix(
    gt: np.ndarray, pred: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The predicted adjacency in ground-truth indexing: ``pred[rows[i], cols[j]]`` where both
    ends are matched, ``1 − gt`` elsewhere (v0.1.0: a missed edge scores 0, a non-edge at an
    unmatched vertex is a confidence-1 false positive)."""
    out = np.full(gt.shape, np.nan)
    (gi, pi), (gj, pj) = rows, cols
    if len(gi) and len(gj):
        out[np.ix_(gi, gj)] = np.asarray(pred, dtype=np.float64)[np.ix_(pi, pj)]
    return np.where(np.isnan(out), 1.0 - gt, out)


def _frame(gt: Mapping[str, Any], pred: Mapping[str, Any], token: Any) -> dict[str, Any]:
    try:
        ann = gt["annotation"]
        gt_lanes = [np.asarray(x["points"], dtype=np.float64) for x in ann["lane_centerline"]]
        gt_tes = [np.asarray(x["points"], dtype=np.float64) for x in ann["traffic_element"]]
        gt_attr = np.array([int(x["attribute"]) for x in ann["traffic_element"]], dtype=np.int64)
        gt_lclc = np.asarray(ann["topology_lclc"], dtype=np.float64)
        gt_lcte = np.asarray(ann["topology_lcte"], dtype=np.float64)
    except (KeyError, TypeError) as err:
        raise ValueError(f"ground truth {token}: missing annotation field {err}") from err
    n, k = len(gt_lanes), len(gt_tes)
    if gt_lclc.size == 0:
        gt_lclc = gt_lclc.reshape(n, n)
    if gt_lcte.size == 0:
        gt_lcte = gt_lcte.reshape(n, k)
    if gt_lclc.shape != (n, n) or gt_lcte.shape != (n, k):
        raise ValueError(
            f"ground truth {token}: topology_lclc {gt_lclc.shape} / topology_lcte {gt_lcte.shape} do not fit "
            f"{n} lanes and {k} traffic elements"
        )
    p = pred["predictions"]
    lanes = [np.asarray(x["points"], dtype=np.float64) for x in p["lane_centerline"]]
    tes = [np.asarray(x["points"], dtype=np.float64) for x in p["traffic_element"]]
    return {
        "gt_lanes": gt_lanes, "gt_attr": gt_attr,
        "gt_lclc": gt_lclc,
        "gt_lcte": gt_lcte,
        "lanes": lanes,
        "lane_conf": np.array([float(x["confidence"]) for x in p["lane_centerline"]]),
        "te_conf": np.array([float(x["confidence"]) for x in p["traffic_element"]]),
        "te_attr": np.array([float(x["attribute"]) for x in p["traffic_element"]]),
        "lclc": np.asarray(p["topology_lclc"], dtype=np.float64),
        "lcte": np.asarray(p["topology_lcte"], dtype=np.float64),
        "d_lane": lane_distance_matrix(gt_lanes, lanes),
        "d_te": iou_distance_matrix(gt_tes, tes),
    }


def _det_pass(frames: list[dict], dist: str, conf: str, threshold: float, quirk: bool):
    tps, fps, confs, matches, num_gt = [], [], [], [], 0
    for f in frames:
        tp, fp, idx = tpfp(f[dist], f[conf], threshold)
        n = f[dist].shape[0]
        num_gt += n
        tps.append(tp)
        fps.append(fp)
        confs.append(f[conf])
        matches.append(_Matches(idx, f[conf], confidence_cuts(tp, f[conf], n, quirk)))
    return average_precision(tps, fps, confs, num_gt), matches


def _mean_or_zero(acc: list[np.ndarray]) -> float:
    values = np.concatenate(acc) if acc else np.zeros(0)
    return float(values.mean()) if len(values) else 0.0


def openlane_v2_score(frames: list[dict], published_inject_quirk: bool = False) -> dict[str, float]:
    """DET_l, DET_t, TOP_ll, TOP_lt and OLS over prepared frames (see ``evaluate``)."""
    det_l, lane_matches = [], {}
    for t in THRESHOLDS_FRECHET:
        ap, lane_matches[t] = _det_pass(frames, "d_lane", "lane_conf", t, published_inject_quirk)
        det_l.append(ap)

    det_t = []
    for a in range(NUM_ATTRIBUTES):
        tps, fps, confs, num_gt = [], [], [], 0
        for f in frames:
            gsel = f["gt_attr"] == a
            psel = f["te_attr"] == a
            tp, fp, _ = tpfp(f["d_te"][np.ix_(gsel, psel)], f["te_conf"][psel], THRESHOLDS_IOU[0])
            tps.append(tp)
            fps.append(fp)
            confs.append(f["te_conf"][psel])
            num_gt += int(gsel.sum())
        det_t.append(average_precision(tps, fps, confs, num_gt))
    # The unfiltered pass only provides the element matches for TOP_lt (attributes ignored).
    te_matches = {
        t: _det_pass(frames, "d_te", "te_conf", t, published_inject_quirk)[1] for t in THRESHOLDS_IOU
    }

    acc_ll, acc_lt = [], []
    for r in range(NUM_CONFIDENCE_CUTS):
        for t in THRESHOLDS_FRECHET:
            lanes_at = [lane_matches[t][k].gt_to_pred(r) for k in range(len(frames))]
            for k, f in enumerate(frames):
                if 0 in f["gt_lclc"].shape:
                    continue
                lanes = lanes_at[k]
                pred = _matched_matrix(f["gt_lclc"], f["lclc"], lanes, lanes)
                acc_ll.append(topology_ap(f["gt_lclc"], pred))
            for t_te in THRESHOLDS_IOU:
                for k, f in enumerate(frames):
                    if 0 in f["gt_lcte"].shape:
                        continue
                    lanes = lanes_at[k]
                    tes = te_matches[t_te][k].gt_to_pred(r)
                    pred = _matched_matrix(f["gt_lcte"], f["lcte"], lanes, tes)
                    acc_lt.append(topology_ap(f["gt_lcte"], pred))

    scores = {
        "DET_l": float(np.mean(det_l)),
        "DET_t": float(np.mean(det_t)),
        "TOP_ll": _mean_or_zero(acc_ll),
        "TOP_lt": _mean_or_zero(acc_lt),
    }
    scores["score"] = float(
        np.mean([scores["DET_l"], scores["DET_t"], np.sqrt(scores["TOP_ll"]), np.sqrt(scores["TOP_lt"])])
    )
    return scores


def evaluate(
    ground_truth: Mapping[Any, Mapping[str, Any]],
    submission: Mapping[str, Any],
    *,
    published_inject_quirk: bool = False,
    f_score_solver: str = "networkx",
) -> dict[str, dict[str, float]]:
    """Score a submission against the collection ``{(split, segment_id, timestamp): frame}``.

    ``submission`` is the published dict with ``results{token: {'predictions': ...}}``;
    ``check_results`` runs first. Frames are visited in ground-truth order. Returns
    ``{'OpenLane-V2 Score': {score, DET_l, DET_t, TOP_ll, TOP_lt},
    'F-Score for 3D Lane': {score, precision, recall}}``. ``f_score_solver``: the exact
    matching of ``f_score.min_cost_matching`` (``'scipy'``: the same optimum value, the
    matching itself ~1000x faster than the default networkx flow)."""
    from .submission import check_results

    check_results(submission)
    results = submission["results"]
    missing = [k for k in ground_truth if k not in results]
    extra = [k for k in results if k not in ground_truth]
    if missing or extra:
        raise ValueError(
            f"evaluate: the submission's frames must equal the ground truth's: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unknown (e.g. {extra[:3]})"
        )
    frames = [_frame(ground_truth[k], results[k], k) for k in ground_truth]
    ols = openlane_v2_score(frames, published_inject_quirk)
    # The F-score visits frames in prediction order (it only sums counts, so order is moot).
    position = {k: i for i, k in enumerate(ground_truth)}
    fs = f_score(
        [frames[position[k]]["gt_lanes"] for k in results],
        [frames[position[k]]["lanes"] for k in results],
        f_score_solver,
    )
    return {"OpenLane-V2 Score": ols, "F-Score for 3D Lane": fs}
