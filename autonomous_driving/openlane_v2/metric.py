"""The OpenLane-V2 evaluation of the published ``dataset.evaluate`` as an mmengine
``BaseMetric`` (mmdet ``METRICS``, ``OpenLaneV2Metric``).

Per frame the model's test output (``pred_lc``, ``pred_te``, ``pred_topology_lclc``,
``pred_topology_lcte``, driving_openlane_params.md §0) goes through ``submission.format_preds``
(11-point decoding); over the set, ``evaluate.evaluate`` scores the submission against the
collection pickle (``ann_file``, the test dataset's). Returned (and printed): ``OLS``,
``DET_l``, ``DET_t``, ``TOP_ll``, ``TOP_lt`` and the 3D-lane ``F-Score`` with its precision and
recall. The published ``--eval-options``: ``dump=True dump_dir=DIR`` writes the submission
pickle ``DIR/result.pkl`` (checked by ``check_results``); ``visualization=True
visualization_dir=DIR`` writes per frame a BEV picture of the lanes and the front image with
the traffic elements (ground truth green, predictions red). A collection without annotation
(the test split) is only dumped.
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from .collection import load_collection
from .evaluate import evaluate
from .submission import dump_submission, format_preds, make_submission

PRED_KEYS = ("pred_lc", "pred_te", "pred_topology_lclc", "pred_topology_lcte")


def _numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    if isinstance(value, (list, tuple)):
        return [_numpy(v) for v in value]
    return np.asarray(value)


def frame_token(sample: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(split, segment_id, timestamp)`` of a data sample (its ``img_metas[0]['token']``)."""
    metas = sample.get("img_metas")
    meta = metas[0] if metas else sample
    token = meta.get("token")
    if token is None or len(token) != 3:
        raise KeyError(
            "OpenLaneV2Metric: the data sample has no (split, segment_id, timestamp) 'token' in its "
            "img_metas: pack it with PackOpenLaneInputs (its default meta_keys)"
        )
    return tuple(str(t) for t in token)


def sample_predictions(sample: Mapping[str, Any], published_topology_order: bool = False) -> dict[str, Any]:
    """One frame's ``{'predictions': ...}`` from a predicted data sample."""
    missing = [k for k in PRED_KEYS if k not in sample]
    if missing:
        raise KeyError(f"OpenLaneV2Metric: the model output lacks {missing} (has {sorted(sample)})")
    pred = {k: _numpy(sample[k]) for k in PRED_KEYS}
    for key in ("pred_lc", "pred_te"):
        if not isinstance(pred[key], list) or len(pred[key]) != 2:
            raise ValueError(f"OpenLaneV2Metric: {key} must be the pair [boxes or lanes, scores]")
    return format_preds(
        pred["pred_lc"], pred["pred_te"], pred["pred_topology_lclc"], pred["pred_topology_lcte"],
        published_topology_order=published_topology_order,
    )


@METRICS.register_module()
class OpenLaneV2Metric(BaseMetric):
    """OLS (DET_l, DET_t, TOP_ll, TOP_lt) and the 3D-lane F-score.

    Args:
        ann_file: the collection pickle the test dataset reads (the ground truth).
        data_root: where the frames' ``image_path`` are relative to (visualization only).
        dump / dump_dir: write ``dump_dir/result.pkl`` (the submission file).
        visualization / visualization_dir: write pictures of every frame.
        visualization_score_thr: predictions drawn from this confidence on.
        published_topology_order: score the topology matrices in query order against the
            score-sorted lanes, as the published ``format_preds`` did (see ``format_preds``).
        published_inject_quirk: the devkit v0.1.0 confidence cuts (see ``evaluate``).
        f_score_solver: ``'networkx'`` (min-cost flow) or ``'scipy'``.
        method, authors, email, institution, country: the submission's meta fields.
    """

    default_prefix = "OpenLane-V2"

    def __init__(
        self,
        ann_file: str,
        data_root: str = "",
        dump: bool = False,
        dump_dir: str | None = None,
        visualization: bool = False,
        visualization_dir: str | None = None,
        visualization_score_thr: float = 0.3,
        published_topology_order: bool = False,
        published_inject_quirk: bool = False,
        f_score_solver: str = "networkx",
        method: str = "ROAD_BEVFormer",
        authors: Sequence[str] = (),
        email: str = "",
        institution: str = "",
        country: str = "",
        collect_device: str = "cpu",
        prefix: str | None = None,
    ):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if dump and not dump_dir:
            raise ValueError("OpenLaneV2Metric: dump=True needs dump_dir=DIR (where result.pkl goes)")
        if visualization and not visualization_dir:
            raise ValueError("OpenLaneV2Metric: visualization=True needs visualization_dir=DIR")
        if f_score_solver not in ("networkx", "scipy"):
            raise ValueError(
                f"OpenLaneV2Metric: f_score_solver must be 'networkx' or 'scipy', got {f_score_solver!r}"
            )
        self.ann_file, self.data_root = ann_file, data_root
        self.dump, self.dump_dir = bool(dump), dump_dir
        self.visualization, self.visualization_dir = bool(visualization), visualization_dir
        self.visualization_score_thr = visualization_score_thr
        self.published_topology_order = published_topology_order
        self.published_inject_quirk = published_inject_quirk
        self.f_score_solver = f_score_solver
        self.meta = dict(method=method, authors=list(authors), email=email, institution=institution,
                         country=country)

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        for sample in data_samples:
            self.results.append(
                (frame_token(sample), sample_predictions(sample, self.published_topology_order))
            )

    def compute_metrics(self, results: list) -> dict[str, float]:
        ground_truth = load_collection(self.ann_file)
        predictions = dict(results)
        if len(predictions) != len(results):
            raise ValueError("OpenLaneV2Metric: a frame was predicted twice (duplicate tokens)")
        submission = make_submission(predictions, **self.meta)
        if self.dump:
            path = dump_submission(submission, osp.join(self.dump_dir, "result.pkl"))
            print_log(f"OpenLane-V2 submission written to {path}", logger="current")
        if self.visualization:
            self._visualize(ground_truth, predictions)
        if not all("annotation" in frame for frame in ground_truth.values()):
            print_log(f"{self.ann_file} has no annotation (test split): nothing to score", logger="current")
            return {}
        scores = evaluate(
            ground_truth, submission, published_inject_quirk=self.published_inject_quirk,
            f_score_solver=self.f_score_solver,
        )
        ols, fs = scores["OpenLane-V2 Score"], scores["F-Score for 3D Lane"]
        print_log(
            "\n".join([
                "OpenLane-V2 Score",
                *(f"  {k:<8}{ols[k]:.4f}" for k in ("score", "DET_l", "DET_t", "TOP_ll", "TOP_lt")),
                "F-Score for 3D Lane",
                *(f"  {k:<10}{fs[k]:.4f}" for k in ("score", "precision", "recall")),
            ]),
            logger="current",
        )
        return {
            "OLS": ols["score"], "DET_l": ols["DET_l"], "DET_t": ols["DET_t"], "TOP_ll": ols["TOP_ll"],
            "TOP_lt": ols["TOP_lt"], "F-Score": fs["score"], "F-Score_precision": fs["precision"],
            "F-Score_recall": fs["recall"],
        }

    # ------------------------------------------------------------------ pictures
    def _visualize(self, ground_truth: Mapping, predictions: Mapping) -> None:
        os.makedirs(self.visualization_dir, exist_ok=True)
        for token, pred in predictions.items():
            frame = ground_truth.get(token)
            if frame is None:
                raise KeyError(f"OpenLaneV2Metric: predicted frame {token} is not in {self.ann_file}")
            name = "_".join(token)
            write_bev_picture(frame, pred["predictions"], osp.join(self.visualization_dir, f"{name}_bev.png"),
                              self.visualization_score_thr)
            write_front_picture(frame, pred["predictions"], self.data_root,
                                osp.join(self.visualization_dir, f"{name}_front.jpg"),
                                self.visualization_score_thr)
        print_log(f"OpenLane-V2 pictures written to {self.visualization_dir}", logger="current")


BEV_RANGE = (-51.2, 51.2, -25.6, 25.6)  # x forward, y left (pc_range)
BEV_PIXELS_PER_M = 8
GREEN, RED = (40, 200, 40), (40, 40, 230)


def _bev_pixels(points: np.ndarray) -> np.ndarray:
    x0, _, _, y1 = BEV_RANGE
    pts = np.asarray(points, dtype=np.float64)
    # image right = ego forward (x), image up = ego left (y)
    return np.round(np.stack([(pts[:, 0] - x0), (y1 - pts[:, 1])], 1) * BEV_PIXELS_PER_M).astype(np.int32)


def write_bev_picture(frame: Mapping, pred: Mapping, path: str, score_thr: float) -> None:
    """The lanes seen from above over the BEV range, arrows at their ends (direction)."""
    import cv2

    x0, x1, y0, y1 = BEV_RANGE
    canvas = np.full((int((y1 - y0) * BEV_PIXELS_PER_M), int((x1 - x0) * BEV_PIXELS_PER_M), 3), 255, np.uint8)
    gt_lanes = [x["points"] for x in frame.get("annotation", {}).get("lane_centerline", [])]
    pred_lanes = [x["points"] for x in pred["lane_centerline"] if x["confidence"] >= score_thr]
    for lanes, colour in ((gt_lanes, GREEN), (pred_lanes, RED)):
        for lane in lanes:
            px = _bev_pixels(lane)
            cv2.polylines(canvas, [px], False, colour, 2)
            if len(px) >= 2:
                tail, head = tuple(map(int, px[-2])), tuple(map(int, px[-1]))
                length = max(float(np.hypot(head[0] - tail[0], head[1] - tail[1])), 1.0)
                # cv2's tip length is a fraction of the segment: a fixed ~10 px tip
                cv2.arrowedLine(canvas, tail, head, colour, 2, tipLength=min(10.0 / length, 1.0))
    cv2.imwrite(path, canvas)


def write_front_picture(frame: Mapping, pred: Mapping, data_root: str, path: str, score_thr: float) -> None:
    """The front image with the traffic-element boxes and their attribute codes."""
    import cv2

    image_path = osp.join(data_root, frame["sensor"]["ring_front_center"]["image_path"])
    img = cv2.imread(image_path)
    if img is None:
        raise FileNotFoundError(
            f"OpenLaneV2Metric visualization: cannot read {image_path} (data_root={data_root!r})"
        )
    gt = [(x["points"], x["attribute"]) for x in frame.get("annotation", {}).get("traffic_element", [])]
    det = [(x["points"], x["attribute"]) for x in pred["traffic_element"] if x["confidence"] >= score_thr]
    for boxes, colour in ((gt, GREEN), (det, RED)):
        for points, attribute in boxes:
            (xa, ya), (xb, yb) = np.round(np.asarray(points, dtype=np.float64)).astype(int)
            cv2.rectangle(img, (xa, ya), (xb, yb), colour, 1)
            cv2.putText(img, str(int(attribute)), (xa, max(ya - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                        colour, 1)
    cv2.imwrite(path, img)
