"""Chamfer AP (driving_hdmap_params.md §7): resampling, distance, matching and AP on cases
whose values are worked out by hand in the comments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autonomous_driving.online_hdmap.chamfer_ap import (
    accumulate_ap,
    average_precision,
    chamfer_distance,
    instance_match,
    interp_fixed_dist,
)
from autonomous_driving.online_hdmap.vector_eval import VectorEvaluate, chamfer_map, format_table

CATS = ("ped_crossing", "divider", "boundary")


def seg(y: float, x0: float = 0.0, x1: float = 2.9) -> list[list[float]]:
    """A straight line along x at height y (2.9 m: not a multiple of the 0.3 m step)."""
    return [[x0, y], [x1, y]]


def gt_frames(*frames: dict[str, list]) -> dict[str, dict[str, list[np.ndarray]]]:
    """{token: {class: [line]}} with tokens 't0', 't1', ... and empty classes filled in."""
    return {
        f"t{i}": {c: [np.asarray(line, dtype=np.float64) for line in f.get(c, [])] for c in CATS}
        for i, f in enumerate(frames)
    }


def result(*preds: tuple[list, float, int]) -> dict[str, list]:
    return {
        "vectors": [p[0] for p in preds],
        "scores": [p[1] for p in preds],
        "labels": [p[2] for p in preds],
    }


# ---- resampling and distance ----------------------------------------------------------


def test_resampling_known_polyline() -> None:
    # L-shape of length 2: d = 0, .3, .6, .9, 1.2, 1.5, 1.8 and the end 2.0.
    pts = interp_fixed_dist([[0, 0], [1, 0], [1, 1]], 0.3)
    expected = [[0, 0], [0.3, 0], [0.6, 0], [0.9, 0], [1, 0.2], [1, 0.5], [1, 0.8], [1, 1]]
    np.testing.assert_allclose(pts, expected, atol=1e-12)


def test_resampling_endpoints_always_included() -> None:
    # Shorter than the step: just the two endpoints.
    np.testing.assert_allclose(interp_fixed_dist([[0, 0], [0.2, 0]]), [[0, 0], [0.2, 0]])
    # Zero length: the point twice (published: [0] + [] + [L = 0]).
    np.testing.assert_allclose(interp_fixed_dist([[1, 1], [1, 1]]), [[1, 1], [1, 1]])
    # Length 0.9, a multiple of 0.3: arange's rounding yields 0.8999..., then L = 0.9 is
    # appended too, so the end point appears twice (published behaviour, kept).
    pts = interp_fixed_dist([[0, 0], [0.9, 0]])
    assert len(pts) == 5 and np.allclose(pts[-2], pts[-1])


def test_resampling_rejects_bad_lines() -> None:
    with pytest.raises(ValueError, match=r"\(N >= 2, 2\)"):
        interp_fixed_dist([[0, 0]])
    with pytest.raises(ValueError, match=r"\(N >= 2, 2\)"):
        interp_fixed_dist([[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="non-finite"):
        interp_fixed_dist([[0, 0], [np.nan, 0]])


def test_chamfer_distance_is_the_mean_of_both_directions() -> None:
    # a->b: (0 + 1)/2 = 0.5, b->a: 0; chamfer = 0.25.
    assert chamfer_distance(np.array([[0.0, 0], [1, 0]]), np.array([[0.0, 0]])) == pytest.approx(0.25)
    # A parallel copy shifted by d: every point's nearest neighbour is d away.
    a = interp_fixed_dist(seg(0.0))
    assert chamfer_distance(a, interp_fixed_dist(seg(0.7))) == pytest.approx(0.7, abs=1e-12)


# ---- matching and AP ------------------------------------------------------------------


def test_threshold_is_inclusive_and_per_threshold() -> None:
    gt = [interp_fixed_dist(seg(0.0))]
    # Shift 0.5 exactly: sqrt(0.25) = 0.5 exactly, so d <= 0.5 holds -> TP at every threshold.
    flags = instance_match([interp_fixed_dist(seg(0.5))], np.array([1.0]), gt)
    assert [(tp.tolist(), fp.tolist()) for tp, fp in flags] == [([1], [0])] * 3
    # Just outside 0.5: FP at 0.5, TP at 1.0 and 1.5.
    flags = instance_match([interp_fixed_dist(seg(0.5 + 1e-6))], np.array([1.0]), gt)
    assert [(tp.tolist(), fp.tolist()) for tp, fp in flags] == [([0], [1]), ([1], [0]), ([1], [0])]


def test_shifted_line_ap_by_threshold() -> None:
    # One divider shifted 0.75 m: AP@0.5 = 0, AP@1.0 = AP@1.5 = 1 -> divider AP = 2/3.
    # The other two classes have no GT: AP 0 each, so mAP = (2/3)/3 = 2/9.
    gts = gt_frames({"divider": [seg(0.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.75), 0.9, 1))})
    assert res["divider"]["AP@0.5"] == 0.0
    assert res["divider"]["AP@1.0"] == res["divider"]["AP@1.5"] == 1.0
    assert res["divider"]["AP"] == pytest.approx(2 / 3)
    assert res["ped_crossing"]["AP"] == res["boundary"]["AP"] == 0.0
    assert res["mAP"] == pytest.approx(2 / 9)


def test_duplicate_prediction_is_a_false_positive() -> None:
    # GT A (y=0), B (y=5). Predictions by score: A (TP), A again (nearest GT covered: FP),
    # B (TP). tp = 1,1,2; fp = 0,1,1; recall .5,.5,1; precision 1,.5,2/3.
    # Area: 0.5 * 1 + 0.5 * 2/3 = 5/6 at every threshold.
    gts = gt_frames({"boundary": [seg(0.0), seg(5.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.0), 0.9, 2), (seg(0.0), 0.8, 2), (seg(5.0), 0.7, 2))})
    for thr in (0.5, 1.0, 1.5):
        assert res["boundary"][f"AP@{thr}"] == pytest.approx(5 / 6)
    # A duplicate ranked after full recall costs nothing (VOC area AP).
    res = chamfer_map(gts, {"t0": result((seg(0.0), 0.9, 2), (seg(5.0), 0.8, 2), (seg(0.0), 0.7, 2))})
    assert res["boundary"]["AP"] == pytest.approx(1.0)


def test_no_fallback_to_the_second_nearest_gt() -> None:
    # GT A (y=0) and B (y=1). p1 = A (score .9, TP). p2 at y=0.4 (score .8): nearest A
    # (0.4), B at 0.6 < 1.0 but is never tried -> FP. At thr 1.0: recall .5,.5,
    # precision 1,.5 -> AP = 0.5 (a fallback would give 1).
    gts = gt_frames({"ped_crossing": [seg(0.0), seg(1.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.0), 0.9, 0), (seg(0.4), 0.8, 0))})
    assert res["ped_crossing"]["AP@1.0"] == pytest.approx(0.5)


@pytest.mark.parametrize(("good", "bad", "expected"), [(0.9, 0.3, 1.0), (0.3, 0.9, 0.5)])
def test_score_order_decides(good: float, bad: float, expected: float) -> None:
    # One GT; an exact prediction and a far one (FP). Far one first: tp 0,1; fp 1,1;
    # recall 0,1; precision 0,.5 -> AP = 1 * 0.5. Exact one first: AP = 1.
    gts = gt_frames({"divider": [seg(0.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.0), good, 1), (seg(10.0), bad, 1))})
    assert res["divider"]["AP"] == pytest.approx(expected)


def test_scores_are_ranked_across_frames() -> None:
    # Frame 0: exact (.6). Frame 1: far FP (.8), exact (.4). Ranked: FP, TP, TP with 2 GT:
    # recall 0,.5,1; precision 0,.5,2/3 -> area .5 * 2/3 + .5 * 2/3 = 2/3.
    gts = gt_frames({"divider": [seg(0.0)]}, {"divider": [seg(3.0)]})
    res = chamfer_map(
        gts, {"t0": result((seg(0.0), 0.6, 1)), "t1": result((seg(20.0), 0.8, 1), (seg(3.0), 0.4, 1))}
    )
    assert res["divider"]["AP"] == pytest.approx(2 / 3)
    assert res["divider"]["num_preds"] == 3 and res["divider"]["num_gts"] == 2


def test_missing_frames_and_foreign_tokens() -> None:
    # Two GT frames, a result only for t0 (exact) plus a token not in the GT (ignored):
    # recall .5 at precision 1 -> AP 0.5; the foreign prediction is not counted.
    gts = gt_frames({"divider": [seg(0.0)]}, {"divider": [seg(0.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.0), 0.5, 1)), "zz": result((seg(0.0), 0.9, 1))})
    assert res["divider"]["AP"] == pytest.approx(0.5)
    assert res["divider"]["num_preds"] == 1


def test_class_without_gt_scores_zero() -> None:
    # Predictions of ped_crossing where no ped_crossing exists: all FP, recall 0 -> AP 0,
    # and the class still counts in the mAP (mean over the 3 classes).
    gts = gt_frames({"divider": [seg(0.0)], "boundary": [seg(2.0)]})
    res = chamfer_map(gts, {"t0": result((seg(0.0), 0.9, 1), (seg(2.0), 0.9, 2), (seg(0.0), 0.9, 0))})
    assert res["ped_crossing"] == {
        "num_gts": 0,
        "num_preds": 1,
        "AP@0.5": 0.0,
        "AP@1.0": 0.0,
        "AP@1.5": 0.0,
        "AP": 0.0,
    }
    assert res["mAP"] == pytest.approx(2 / 3)


def test_average_precision_voc_area() -> None:
    # Curve (r, p): (.25, 1), (.5, .5), (.75, .6). Right-max: 1, .6, .6 ->
    # .25 * 1 + .25 * .6 + .25 * .6 = .55 (the tail to recall 1 has precision 0).
    assert average_precision(np.array([0.25, 0.5, 0.75]), np.array([1.0, 0.5, 0.6])) == pytest.approx(0.55)
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0
    assert accumulate_ap([], 3) == 0.0


def test_wrong_inputs_fail_clearly() -> None:
    gts = gt_frames({"divider": [seg(0.0)]})
    with pytest.raises(ValueError, match="wrong split"):
        chamfer_map(gts, {"other": result((seg(0.0), 0.9, 1))})
    with pytest.raises(ValueError, match=r"labels\[0\] = 3"):
        chamfer_map(gts, {"t0": result((seg(0.0), 0.9, 3))})
    with pytest.raises(ValueError, match="must be equal"):
        chamfer_map(gts, {"t0": {"vectors": [seg(0.0)], "scores": [], "labels": [1]}})
    with pytest.raises(ValueError, match=r"results\[t0\] vectors\[0\] has shape \(1, 2\)"):
        chamfer_map(gts, {"t0": result(([[0.0, 0.0]], 0.9, 1))})
    with pytest.raises(ValueError, match="not finite"):
        chamfer_map(gts, {"t0": result((seg(0.0), float("nan"), 1))})


# ---- the evaluator on files -----------------------------------------------------------


def _ann_file(tmp_path, frames_per_segment: dict[str, list[dict]]) -> str:
    path = tmp_path / "val_annotations.json"
    path.write_text(json.dumps(frames_per_segment))
    return str(path)


def _frame(ts: str, lines: dict[str, list]) -> dict:
    # GT lines are N x 4 (x, y, z, visibility) in the published files; z and visibility ignored.
    ann = {c: [[[x, y, 0.3, 1.0] for x, y in line] for line in lines.get(c, [])] for c in CATS}
    return {"segment_id": "seg", "timestamp": ts, "annotation": ann}


def test_ground_truth_as_prediction_scores_one_everywhere(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for k in range(3):
        lines = {
            c: [np.cumsum(rng.uniform(-3, 3, (rng.integers(2, 6), 2)), 0).tolist() for _ in range(2)]
            for c in CATS
        }
        frames.append(_frame(str(315967376859506000 + k), lines))
    ann = _ann_file(tmp_path, {"seg": frames})
    sub = {"meta": {}, "results": {}}
    for f in frames:
        vec, lab = [], []
        for label, c in enumerate(CATS):
            vec += [np.asarray(line)[:, :2].tolist() for line in f["annotation"][c]]
            lab += [label] * len(f["annotation"][c])
        sub["results"][f["timestamp"]] = {
            "vectors": vec,
            "scores": np.linspace(1, 0.1, len(vec)).tolist(),
            "labels": lab,
        }
    (tmp_path / "sub.json").write_text(json.dumps(sub))
    ev = VectorEvaluate(ann, n_workers=0)
    out = ev.evaluate(str(tmp_path / "sub.json"))
    assert out == {c: 1.0 for c in CATS}
    assert ev.last_result["mAP"] == 1.0
    printed = capsys.readouterr().out
    assert "mAP = 1.0000" in printed
    assert "| num_preds | num_gts | AP@0.5 | AP@1.0 | AP@1.5 |" in printed and "|   boundary   |" in printed
    # A worker pool gives the same numbers.
    assert VectorEvaluate(ann, n_workers=1).evaluate(sub) == out
    with pytest.raises(ValueError, match="only 'chamfer'"):
        ev.evaluate(sub, "frechet")


def test_table_layout() -> None:
    r = {
        c: {"num_preds": 35, "num_gts": 7, "AP@0.5": 0.123456, "AP@1.0": 0.5, "AP@1.5": 2 / 3, "AP": 0.4}
        for c in CATS
    }
    table = format_table(r).splitlines()
    assert table[1] == "|   category   | num_preds | num_gts | AP@0.5 | AP@1.0 | AP@1.5 |  AP |"
    assert table[3] == "| ped_crossing |     35    |    7    | 0.1235 |  0.5   | 0.6667 | 0.4 |"
    assert [row.split("|")[1].strip() for row in table[3:6]] == list(CATS)


def test_duplicate_tokens_in_annotations_are_refused(tmp_path) -> None:
    ann = _ann_file(tmp_path, {"a": [_frame("1", {})], "b": [_frame("1", {})]})
    with pytest.raises(ValueError, match="token 1 appears twice"):
        VectorEvaluate(ann)
