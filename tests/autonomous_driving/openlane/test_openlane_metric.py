"""The OpenLane-V2 score and the 3D-lane F-score against values worked out by hand
(driving_openlane_params.md §7). Every expected number below is derived in the comment
next to it from the published rules, not from running the code."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autonomous_driving.openlane_v2.distance import (
    chamfer_distance,
    chamfer_matrix,
    frechet_batch,
    frechet_distance,
    iou_distance_matrix,
    lane_distance_matrix,
    pairwise,
)
from autonomous_driving.openlane_v2.evaluate import (
    average_precision,
    confidence_cuts,
    evaluate,
    topology_ap,
    tpfp,
)
from autonomous_driving.openlane_v2.f_score import (
    f_score,
    frame_counts,
    min_cost_matching,
    pair_costs,
    resample_lane,
)
from autonomous_driving.openlane_v2.submission import check_results, make_submission

TOKEN = ("val", "seg0", "100")


def lane(y: float, x0: float = 0.0, x1: float = 10.0, n: int = 11, z: float = 0.0) -> np.ndarray:
    x = np.linspace(x0, x1, n)
    return np.stack([x, np.full(n, y), np.full(n, z)], axis=1).astype(np.float32)


def box(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y2]], dtype=np.float32)


# The base scene: three lanes 10 m apart (Chamfer 10 > 3, so never compared with each other),
# lane 0 -> 1 -> 2, two traffic elements (red light, go-straight sign), lane 0 - TE 0, lane 1 - TE 1.
GT_LANES = [lane(0.0), lane(10.0), lane(-10.0)]
GT_TES = [(box(100, 100, 200, 200), 1), (box(300, 100, 400, 200), 4)]
GT_LCLC = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.int8)
GT_LCTE = np.array([[1, 0], [0, 1], [0, 0]], dtype=np.int8)


def gt_frame(lanes=GT_LANES, tes=GT_TES, lclc=GT_LCLC, lcte=GT_LCTE) -> dict:
    return {
        "annotation": {
            "lane_centerline": [
                {"id": str(i), "points": p, "is_intersection_or_connector": False}
                for i, p in enumerate(lanes)
            ],
            "traffic_element": [
                {"id": str(100 + i), "category": 1, "attribute": a, "points": b}
                for i, (b, a) in enumerate(tes)
            ],
            "topology_lclc": lclc,
            "topology_lcte": lcte,
        }
    }


def pred_frame(lanes, lane_conf, tes, te_conf, lclc, lcte) -> dict:
    return {
        "predictions": {
            "lane_centerline": [
                {"id": 1000 + i, "points": p, "confidence": c}
                for i, (p, c) in enumerate(zip(lanes, lane_conf))
            ],
            "traffic_element": [
                {"id": 2000 + i, "attribute": float(a), "points": b, "confidence": c}
                for i, ((b, a), c) in enumerate(zip(tes, te_conf))
            ],
            "topology_lclc": np.asarray(lclc, dtype=np.float32),
            "topology_lcte": np.asarray(lcte, dtype=np.float32),
        }
    }


def score(gt: dict, pred: dict, **kw) -> dict:
    return evaluate(gt, make_submission(pred), **kw)


def ols(det_l, det_t, top_ll, top_lt) -> float:
    return (det_l + det_t + math.sqrt(top_ll) + math.sqrt(top_lt)) / 4


# ---------------------------------------------------------------- distances


def brute_force_frechet(p: np.ndarray, q: np.ndarray) -> float:
    """min over every monotone coupling path of the max point distance (the definition)."""
    n, m = len(p), len(q)
    best = math.inf

    def walk(i, j, worst):
        nonlocal best
        worst = max(worst, float(np.linalg.norm(p[i] - q[j])))
        if worst >= best:
            return
        if (i, j) == (n - 1, m - 1):
            best = worst
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, worst)

    walk(0, 0, 0.0)
    return best


def test_frechet_known_curves():
    p = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=float)
    assert frechet_distance(p, p + [0, 1, 0]) == pytest.approx(1.0)  # parallel, 1 m apart
    assert frechet_distance(p, p[::-1]) == pytest.approx(2.0)  # reversed: the start points are 2 m apart
    assert chamfer_distance(p, p[::-1]) == 0.0  # ... which Chamfer cannot see
    # Different lengths: q skips the middle point; the coupling must pass P1=(1,0) against a
    # q end point, 1 m away.
    assert frechet_distance(p, np.array([[0, 0, 0], [2, 0, 0]], float)) == pytest.approx(1.0)
    # A zig-zag against a 2-point line: every zig vertex pairs with one of the line's end points;
    # the best split gives (0,0),(1,1),(2,0) to (0,0) [0, √2, 2] and (3,1),(4,0) to (4,0) [√2, 0]:
    # 2, set by the middle vertex (2 m from either end), although it lies on the line.
    zig = np.array([[0, 0, 0], [1, 1, 0], [2, 0, 0], [3, 1, 0], [4, 0, 0]], dtype=float)
    line = np.array([[0, 0, 0], [4, 0, 0]], dtype=float)
    assert frechet_distance(zig, line) == pytest.approx(2.0)


def test_frechet_batch_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, m = rng.integers(1, 6, size=2)
        p, q = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
        assert frechet_distance(p, q) == pytest.approx(brute_force_frechet(p, q), abs=1e-12)
    p, q = rng.normal(size=(7, 4, 3)), rng.normal(size=(7, 6, 3))
    np.testing.assert_allclose(frechet_batch(p, q), [brute_force_frechet(a, b) for a, b in zip(p, q)])


def test_chamfer_by_hand_and_matrix():
    # p→q: (1 + √5)/2; q→p: 1; Chamfer = ½ of their sum.
    assert chamfer_distance([[0, 0, 0], [2, 0, 0]], [[0, 1, 0]]) == pytest.approx(
        0.5 * ((1 + math.sqrt(5)) / 2 + 1)
    )
    rng = np.random.default_rng(1)
    gts = [rng.normal(size=(k, 3)) for k in (3, 11, 5)]
    preds = [rng.normal(size=(k, 3)) for k in (11, 2)]
    np.testing.assert_allclose(chamfer_matrix(gts, preds), pairwise(gts, preds, chamfer_distance), rtol=1e-12)


def test_lane_distance_relaxation_and_chamfer_gate():
    far = lane(0.0, 100.0, 110.0)  # nearest point 100 m away: factor max(0.5, 1 - 0.5) = 0.5
    near = lane(0.0, 20.0, 30.0)  # 20 m: factor 0.9
    d = lane_distance_matrix([far, near], [far + [0, 1.5, 0], near + [0, 1.5, 0]])
    assert d[0, 0] == pytest.approx(0.75, rel=1e-6)  # 1.5 m off, halved: a TP at the 1 m threshold
    assert d[1, 1] == pytest.approx(1.35, rel=1e-6)
    assert d[0, 1] == 1024.0 and d[1, 0] == 1024.0  # 80 m apart: never compared
    # Gate on the relaxed Chamfer: 5 m off at factor 0.5 -> 2.5 < 3 computed; 7 m -> 3.5 not.
    d = lane_distance_matrix([far], [far + [0, 5, 0], far + [0, 7, 0]])
    assert d[0, 0] == pytest.approx(2.5, rel=1e-6) and d[0, 1] == 1024.0
    # Same values as the published pairwise composition.
    gts, preds = [far, near], [far + [0, 5, 0], near[::-1], near + [0, 0.3, 0.2]]
    mask = pairwise(gts, preds, chamfer_distance, relax=True) < 3.0
    np.testing.assert_allclose(
        lane_distance_matrix(gts, preds),
        pairwise(gts, preds, frechet_distance, mask=mask, relax=True),
        rtol=1e-12,
    )


def test_iou_distance():
    g = [box(0, 0, 10, 10)]
    d = iou_distance_matrix(g, [box(0, 0, 10, 10), box(5, 0, 15, 10), box(20, 20, 30, 30)])
    np.testing.assert_allclose(d, [[0.0, 2 / 3, 1.0]])  # inter 50 / union 150 for the shifted one


# ---------------------------------------------------------------- AP pieces


def test_tpfp_nearest_ground_truth_only():
    d = np.array([[0.5, 0.2, 5.0], [3.0, 3.0, 0.1]])
    tp, fp, idx = tpfp(d, np.array([0.9, 0.8, 0.7]), 1.0)
    # p0 (most confident) takes g0; p1's nearest is g0, already covered -> FP; p2 takes g1.
    assert tp.tolist() == [True, False, True] and fp.tolist() == [False, True, False]
    assert idx[0] == 0 and math.isnan(idx[1]) and idx[2] == 1
    # No fallback to the second-nearest ground truth, even when it is free and close enough.
    tp, _, _ = tpfp(np.array([[0.1, 0.2], [5.0, 0.5]]), np.array([0.9, 0.8]), 1.0)
    assert tp.tolist() == [True, False]
    # Strict threshold.
    assert tpfp(np.array([[1.0]]), np.array([0.5]), 1.0)[0].tolist() == [False]


def test_average_precision_11_point():
    # Two TPs of three GT: recall 1/3, 2/3 at precision 1 -> the points 0 .. 0.6 (7 of 11) score 1.
    assert average_precision([[True, True]], [[False, False]], [[0.9, 0.8]], 3) == pytest.approx(7 / 11)
    # The recall points are np.linspace(0, 1, 11): 0.3 is 0.30000000000000004, so 3 of 10 found
    # reaches only 0, 0.1, 0.2.
    assert average_precision([[True] * 3], [[False] * 3], [[0.9, 0.8, 0.7]], 10) == pytest.approx(3 / 11)
    # Pooled across frames before sorting: [0.95 FP, 0.9 TP, 0.5 TP] of 2 GT -> precision 0, 1/2, 2/3
    # at recall 0, 1/2, 1: the best precision at every recall point is 2/3.
    assert average_precision(
        [[True], [False, True]], [[False], [True, False]], [[0.9], [0.95, 0.5]], 2
    ) == pytest.approx(2 / 3)
    assert average_precision([], [], [], 0) == 1.0  # nothing to find, nothing claimed
    assert average_precision([[False]], [[True]], [[0.5]], 0) == 0.0
    assert average_precision([np.zeros(0, bool)], [np.zeros(0, bool)], [np.zeros(0)], 4) == 0.0


def test_confidence_cuts_sorted_and_published_quirk():
    # Sorted order [1, 2, 0]; recall is 1 everywhere, so every cut is the last sorted position (2):
    # the sorted confidence there is 0.7 (all predictions kept); v0.1.0 reads conf[2] = 0.8 instead.
    conf, tp = np.array([0.7, 0.9, 0.8]), np.array([False, True, False])
    np.testing.assert_array_equal(confidence_cuts(tp, conf, 1), [0.7] * 10)
    np.testing.assert_array_equal(confidence_cuts(tp, conf, 1, published_inject_quirk=True), [0.8] * 10)
    # Distinct recall values: the cut at 100 % is the confidence where recall first reaches 1.
    conf, tp = np.array([0.2, 0.9, 0.5]), np.ones(3, bool)
    cuts = confidence_cuts(tp, conf, 3)
    recall = np.array([1, 2, 3]) / 3
    taken = np.percentile(recall, np.arange(10, 101, 10), method="closest_observation")
    np.testing.assert_array_equal(cuts, np.array([0.9, 0.5, 0.2])[[list(recall).index(v) for v in taken]])
    assert cuts[-1] == 0.2
    assert confidence_cuts(np.zeros(0, bool), np.zeros(0), 3).shape == (0,)


def test_topology_ap_per_vertex():
    gt = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    # Rows: {1} vs {1: 0.8, 2: 1.0} -> hit at rank 2, AP 1/2; {2} vs {} -> 0; {} vs {0, 1, 2} -> 0.
    # Columns: {} vs {2} -> 0; {0} vs {0: 0.8, 2: 1.0} -> 1/2; {1} vs {0, 2} -> 0.
    pred = np.array([[0.1, 0.8, 1.0], [0.1, 0.1, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(topology_ap(gt, pred), [0.5, 0, 0, 0, 0.5, 0])
    assert topology_ap(np.zeros((2, 2)), np.zeros((2, 2))).tolist() == [1.0] * 4  # nothing either side
    # Two GT edges, ranked 1st and 3rd: (1/1 + 2/3) / 2.
    np.testing.assert_allclose(
        topology_ap(np.array([[1, 0, 1]]), np.array([[0.9, 0.8, 0.7]]))[0], (1 + 2 / 3) / 2
    )


# ---------------------------------------------------------------- whole scores, hand-built scenes


def perfect_prediction():
    return pred_frame(GT_LANES, [0.9] * 3, GT_TES, [0.9] * 2, GT_LCLC, GT_LCTE)


def test_ground_truth_as_prediction_scores_one():
    res = score({TOKEN: gt_frame()}, {TOKEN: perfect_prediction()})
    assert res["OpenLane-V2 Score"] == {
        "DET_l": 1.0,
        "DET_t": 1.0,
        "TOP_ll": 1.0,
        "TOP_lt": 1.0,
        "score": 1.0,
    }
    assert res["F-Score for 3D Lane"] == {"score": 1.0, "precision": 1.0, "recall": 1.0}


def test_one_lane_missed():
    pred = pred_frame(
        GT_LANES[:2], [0.9, 0.9], GT_TES, [0.9, 0.9], [[0.1, 0.8], [0.1, 0.1]], [[0.8, 0.1], [0.1, 0.8]]
    )
    res = score({TOKEN: gt_frame()}, {TOKEN: pred})
    s = res["OpenLane-V2 Score"]
    assert s["DET_l"] == pytest.approx(7 / 11)  # recall 1/3, 2/3 at precision 1
    assert s["DET_t"] == 1.0
    # Lane 2 unmatched: its row/column become 1 - gt. Worked out in test_topology_ap_per_vertex:
    # values 1/2, 0, 0, 0, 1/2, 0.
    assert s["TOP_ll"] == pytest.approx(1 / 6)
    # lcte rows: lane 0 {TE0} ok 1, lane 1 {TE1} ok 1, lane 2 (unmatched) {} vs {TE0, TE1} at 1.0 -> 0;
    # columns: TE0 {lane 0} vs {lane 2: 1.0, lane 0: 0.8} -> 1/2, TE1 likewise 1/2. Mean 3/5.
    assert s["TOP_lt"] == pytest.approx(3 / 5)
    assert s["score"] == pytest.approx(ols(7 / 11, 1, 1 / 6, 3 / 5))
    # F-score: 2 of 3 GT lanes matched exactly: R = 2/3, P = 1, F = 0.8.
    assert res["F-Score for 3D Lane"]["score"] == pytest.approx(0.8)
    assert res["F-Score for 3D Lane"]["recall"] == pytest.approx(2 / 3)


def test_one_false_positive_lane():
    lanes = [lane(30.0), *GT_LANES]  # a confident lane where there is none
    lclc = np.full((4, 4), 0.1)
    pred = pred_frame(lanes, [0.95, 0.9, 0.9, 0.9], GT_TES, [0.9, 0.9], lclc, np.full((4, 2), 0.1))
    res = score({TOKEN: gt_frame()}, {TOKEN: pred})
    # [FP, TP, TP, TP]: recall 0, 1/3, 2/3, 1 at precision 0, 1/2, 2/3, 3/4 -> 3/4 at every point.
    assert res["OpenLane-V2 Score"]["DET_l"] == pytest.approx(0.75)
    assert res["OpenLane-V2 Score"]["DET_t"] == 1.0
    # F-score: 3 matched of 3 GT, 4 predicted: R = 1, P = 3/4, F = 6/7.
    assert res["F-Score for 3D Lane"]["score"] == pytest.approx(6 / 7)


def test_topology_edge_wrong():
    # Edge 1 -> 2 predicted as 1 -> 0. Rows: {1}/{1} 1, {2}/{0} 0, {}/{} 1; columns: {}/{1} 0,
    # {0}/{0} 1, {1}/{} 0 -> 3/6.
    lclc = [[0.1, 0.8, 0.1], [0.7, 0.1, 0.1], [0.1, 0.1, 0.1]]
    lcte = [[0.8, 0.1], [0.1, 0.8], [0.1, 0.1]]
    pred = pred_frame(GT_LANES, [0.9] * 3, GT_TES, [0.9] * 2, lclc, lcte)
    s = score({TOKEN: gt_frame()}, {TOKEN: pred})["OpenLane-V2 Score"]
    assert (s["DET_l"], s["DET_t"], s["TOP_lt"]) == (1.0, 1.0, 1.0)
    assert s["TOP_ll"] == pytest.approx(0.5)
    assert s["score"] == pytest.approx(ols(1, 1, 0.5, 1))


def test_traffic_element_wrong_attribute():
    tes = [GT_TES[0], (GT_TES[1][0], 5)]  # the go-straight sign called turn-left
    pred = pred_frame(GT_LANES, [0.9] * 3, tes, [0.9] * 2, GT_LCLC, GT_LCTE)
    s = score({TOKEN: gt_frame()}, {TOKEN: pred})["OpenLane-V2 Score"]
    # Attribute 1: 1; attribute 4: GT, no prediction -> 0; attribute 5: prediction, no GT -> 0; the
    # other 10 attributes: nothing either side -> 1 each. (1 + 0 + 0 + 10) / 13.
    assert s["DET_t"] == pytest.approx(11 / 13)
    assert s["TOP_lt"] == 1.0  # the topology matching ignores attributes
    assert s["score"] == pytest.approx(ols(1, 11 / 13, 1, 1))


def test_traffic_element_iou_threshold_is_strict():
    b = GT_TES[1][0]
    for shift, expected in ((50, 1.0), (60, 12 / 13)):
        # shift 50: IoU 50/150 = 1/3, distance 2/3 < 0.75 -> TP. shift 60: IoU 40/160 = 1/4, distance
        # exactly 0.75 -> not < 0.75 -> FP and a missed GT, attribute 4 scores 0.
        tes = [GT_TES[0], (b + [shift, 0], 4)]
        pred = pred_frame(GT_LANES, [0.9] * 3, tes, [0.9] * 2, GT_LCLC, GT_LCTE)
        assert score({TOKEN: gt_frame()}, {TOKEN: pred})["OpenLane-V2 Score"]["DET_t"] == pytest.approx(
            expected
        )


def test_frames_without_topology_are_skipped():
    empty = gt_frame(lanes=[], tes=[], lclc=np.zeros((0, 0)), lcte=np.zeros((0, 0)))
    pred = pred_frame([], [], [], [], np.zeros((0, 0)), np.zeros((0, 0)))
    s = score({TOKEN: empty}, {TOKEN: pred})["OpenLane-V2 Score"]
    # Nothing to find and nothing claimed: every AP is 1; no topology to score: 0 (devkit 2.1.0 rule).
    assert (s["DET_l"], s["DET_t"], s["TOP_ll"], s["TOP_lt"]) == (1.0, 1.0, 0.0, 0.0)


def test_evaluate_requires_the_same_frames():
    with pytest.raises(ValueError, match="missing"):
        score({TOKEN: gt_frame(), ("val", "seg0", "200"): gt_frame()}, {TOKEN: perfect_prediction()})


# ---------------------------------------------------------------- F-score


def test_f_score_resampling_and_filters():
    yz, vis = resample_lane(lane(2.0, 0.0, 10.0))
    assert vis.sum() == 11 and np.allclose(yz[vis], [2.0, 0.0])  # samples x = 0..10
    assert resample_lane(lane(0.0, 60.0, 70.0)) is None  # first x >= 49
    assert resample_lane(lane(0.0, -70.0, -60.0)) is None  # last x <= -50
    assert resample_lane(lane(0.0, 48.5, 49.5)) is None  # only x = 49 visible
    assert resample_lane(lane(0.0, 5.0, 5.0, n=1)) is None  # fewer than 2 points


def test_f_score_pair_costs_by_hand():
    gts = [resample_lane(lane(0.0))]
    preds = [resample_lane(p) for p in (lane(1.0), lane(2.0), lane(0.04), lane(0.0, 5.0, 15.0), lane(0.0))]
    cost, num_match = pair_costs(gts, preds)
    # 1 m off on 11 shared samples: cost 11, all within 1.5. 2 m off: cost 22, none within.
    # 0.04 m: 0.44 in total -> rounded up to 1. Shifted by 5 m: shared x 5..10 (6 samples, d = 0),
    # 5 samples each seen by one lane only (1.5 each) -> cost int(15) = 15, 6 matched. Identical: 0.
    assert cost[0].tolist() == [11, 22, 1, 15, 0]
    assert num_match[0].tolist() == [11, 0, 11, 6, 11]
    # Counting: r_lane needs num_match / 11 >= 0.75 (6/11 fails); p_lane the same on the prediction.
    assert frame_counts([lane(0.0)], [lane(0.0, 5.0, 15.0)])["r_lane"] == 0
    assert frame_counts([lane(0.0)], [lane(1.0)]) == {
        "r_lane": 1,
        "p_lane": 1,
        "match_num": 1,
        "cnt_gt": 1,
        "cnt_pred": 1,
    }
    # A match costing 150 or more does not count at all.
    assert frame_counts([lane(0.0, -40, 40, n=81)], [lane(3.0, -40, 40, n=81)])["match_num"] == 0


@pytest.mark.parametrize("solver", ["networkx", "scipy"])
def test_min_cost_matching_against_brute_force(solver):
    rng = np.random.default_rng(0)
    for _ in range(60):
        g, p = (int(v) for v in rng.integers(1, 6, size=2))
        cost = rng.integers(0, 12, size=(g, p))  # small range: many ties
        pairs = min_cost_matching(cost, solver)
        k = min(g, p)
        assert len(pairs) == k
        assert len({i for i, _ in pairs}) == k and len({j for _, j in pairs}) == k
        if g <= p:
            best = min(sum(cost[i, js[i]] for i in range(g)) for js in itertools.permutations(range(p), g))
        else:
            best = min(sum(cost[is_[j], j] for j in range(p)) for is_ in itertools.permutations(range(g), p))
        assert sum(cost[i, j] for i, j in pairs) == best
    assert min_cost_matching(np.zeros((0, 3), np.int64)) == []
    with pytest.raises(ValueError, match="integer"):
        min_cost_matching(np.zeros((2, 2)), solver)
    with pytest.raises(ValueError, match="solver"):
        min_cost_matching(np.zeros((2, 2), np.int64), "ortools")


def test_f_score_aggregates_over_frames():
    # Frame 1: 1 GT, 1 exact prediction. Frame 2: 2 GT, 1 prediction 2 m off (cost 22 < 150: matched,
    # but 0 of 11 samples within 1.5 m). R = 1/3, P = 1/2, F = 2·(1/6)/(5/6) = 0.4.
    res = f_score([[lane(0.0)], [lane(0.0), lane(20.0)]], [[lane(0.0)], [lane(2.0)]])
    assert res == pytest.approx({"score": 0.4, "precision": 0.5, "recall": 1 / 3})
    assert f_score([[]], [[]]) == {"score": 0.0, "precision": 0.0, "recall": 0.0}


# ---------------------------------------------------------------- check_results


def test_check_results_names_the_problem():
    good = make_submission({TOKEN: perfect_prediction()}, authors=["a"])
    check_results(good)

    def broken(edit):
        sub = make_submission({TOKEN: perfect_prediction()})
        edit(sub)
        return sub

    cases = [
        (lambda s: s.pop("e-mail"), "lacks"),
        (lambda s: s.update(authors=[str(i) for i in range(11)]), "at most 10"),
        (
            lambda s: s["results"][TOKEN]["predictions"]["traffic_element"][0].update(attribute=13.0),
            "attribute",
        ),
        (
            lambda s: s["results"][TOKEN]["predictions"]["traffic_element"][0].update(attribute=1.5),
            "attribute",
        ),
        (
            lambda s: s["results"][TOKEN]["predictions"].update(topology_lclc=np.zeros((2, 2))),
            "topology_lclc",
        ),
        (
            lambda s: s["results"][TOKEN]["predictions"].update(topology_lcte=np.full((3, 2), 3.0)),
            r"\[0, 1\]",
        ),
        (
            lambda s: s["results"][TOKEN]["predictions"]["lane_centerline"][0].update(
                points=np.zeros((1, 3))
            ),
            "points",
        ),
        (lambda s: s["results"][TOKEN]["predictions"]["lane_centerline"][1].update(id=1000), "unique"),
        (
            lambda s: s["results"][TOKEN]["predictions"]["lane_centerline"][0].update(
                confidence=float("nan")
            ),
            "finite",
        ),
        (lambda s: s["results"].update({"val/seg0/100": perfect_prediction()}), "tuple"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            check_results(broken(edit))


def test_topology_confidence_cuts_through_evaluate():
    # GT lanes 0 -> 1. Predictions (list order): lane 0 at 0.3, lane 1 at 0.9, a false positive at
    # 0.6. Sorted: [TP, FP, TP] of 2 GT, recall [1/2, 1/2, 1], precision [1, 1/2, 2/3]:
    # DET_l = (6·1 + 5·2/3)/11 = 28/33 at every threshold.
    # Cuts: closest-observation percentiles of the recall curve give 1/2 for 10..80 % and 1 for
    # 90, 100 %. Recall 1/2 -> last sorted position 1 -> cut 0.6: lane 0 is left out, its row and
    # column become 1 - gt and all four vertex APs are 0. Recall 1 -> position 2 -> cut 0.3: both
    # lanes in, all four APs 1. TOP_ll = 2/10.
    # v0.1.0 reads the cuts from the unsorted list: conf[1] = 0.9 and conf[2] = 0.6, so lane 0
    # is never in: TOP_ll = 0.
    gt = gt_frame(lanes=GT_LANES[:2], tes=[], lclc=np.array([[0, 1], [0, 0]]), lcte=np.zeros((2, 0)))
    lclc = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]
    pred = pred_frame([GT_LANES[0], GT_LANES[1], lane(30.0)], [0.3, 0.9, 0.6], [], [], lclc, np.zeros((3, 0)))
    fixed = score({TOKEN: gt}, {TOKEN: pred})["OpenLane-V2 Score"]
    quirk = score({TOKEN: gt}, {TOKEN: pred}, published_inject_quirk=True)["OpenLane-V2 Score"]
    assert fixed["DET_l"] == pytest.approx(28 / 33) and quirk["DET_l"] == fixed["DET_l"]
    assert fixed["TOP_ll"] == pytest.approx(0.2)
    assert quirk["TOP_ll"] == 0.0


def test_min_cost_matching_solvers_agree_on_frame_sizes():
    # Frame-sized problems (brute force is out of reach): the pruned flow and the assignment
    # solver reach the same optimum, with both G < P and G > P.
    rng = np.random.default_rng(3)
    for shape in ((12, 40), (40, 12)):
        cost = rng.integers(0, 300, size=shape)
        totals = [sum(cost[i, j] for i, j in min_cost_matching(cost, s)) for s in ("networkx", "scipy")]
        assert totals[0] == totals[1]


def test_lane_between_thresholds():
    # One GT lane from the ego origin (relaxation factor 1), predicted 1.5 m to the side: Fréchet
    # 1.5 -> missed at 1 m, found at 2 and 3 m: DET_l = (0 + 1 + 1)/3.
    # TOP_ll per threshold: at 1 m the lane is unmatched, its 1x1 matrix becomes 1 - gt = [[1]]
    # against no GT edge: row 0, column 0. At 2 and 3 m it is matched, [[0.1]]: nothing either
    # side, row 1, column 1. Pooled: (0 + 0 + 1 + 1 + 1 + 1)/6 = 2/3.
    gt = gt_frame(lanes=[lane(0.0)], tes=[], lclc=np.zeros((1, 1)), lcte=np.zeros((1, 0)))
    pred = pred_frame([lane(1.5)], [0.7], [], [], [[0.1]], np.zeros((1, 0)))
    s = score({TOKEN: gt}, {TOKEN: pred})["OpenLane-V2 Score"]
    assert s["DET_l"] == pytest.approx(2 / 3)
    assert s["TOP_ll"] == pytest.approx(2 / 3)
    assert s["TOP_lt"] == 0.0  # no traffic element anywhere: nothing to score
