"""The challenge evaluation as an mmengine ``BaseMetric`` (mmdet ``METRICS``:
``VectorMapMetric``): the published ``format_results`` (normalised predictions ->
``submission_vector.json``, metres) and then ``VectorEvaluate`` on that file, so the
numbers are exactly those of ``tools/evaluate_submission.py`` on the written submission.

Per data sample (what the model's ``predict`` returns, as ``BaseDataElement.to_dict()``):
the ``token`` (metainfo) and the predictions in the published post-process form,
``pred_vectors`` (list of (n, 2) in the normalised (0, 1) frame), ``pred_scores`` and
``pred_labels`` (one per vector).
"""

from __future__ import annotations

import os
import os.path as osp
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from .chamfer_ap import ID2CAT, THRESHOLDS
from .submission import default_meta, format_results
from .vector_eval import VectorEvaluate
from .vectorize import ROI_SIZE

PRED_KEYS = ("pred_vectors", "pred_scores", "pred_labels")


def _plain(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def sample_prediction(sample: Mapping[str, Any]) -> dict[str, Any]:
    """``{'token', 'vectors', 'scores', 'labels'}`` of one predicted data sample (numpy)."""
    token = sample.get("token")
    if token is None and sample.get("img_metas"):
        token = sample["img_metas"][0].get("token")
    if token is None:
        raise KeyError(
            "VectorMapMetric: the data sample has no 'token' (PackMapInputs meta_keys must hold it)"
        )
    missing = [k for k in PRED_KEYS if k not in sample]
    if missing:
        raise KeyError(
            f"VectorMapMetric: sample {token} lacks {missing}; the model's predict must set "
            f"{list(PRED_KEYS)} on each data sample (have {sorted(sample)})"
        )
    vectors = [np.asarray(_plain(v), dtype=np.float64).reshape(-1, 2) for v in sample["pred_vectors"]]
    scores = np.asarray(_plain(sample["pred_scores"]), dtype=np.float64).reshape(-1)
    labels = np.asarray(_plain(sample["pred_labels"]), dtype=np.int64).reshape(-1)
    return {"token": str(token), "vectors": vectors, "scores": scores.tolist(), "labels": labels.tolist()}


@METRICS.register_module()
class VectorMapMetric(BaseMetric):
    """Chamfer AP at 0.5 / 1.0 / 1.5 m per class and mAP (driving_hdmap_params.md §7).

    Args:
        ann_file: the split's annotation json (ground truth); default: the evaluated
            dataset's own ``ann_file`` (``AV2Dataset`` puts it in its metainfo).
        roi_size: (x, y) metres of the map box, for de-normalising (published (60, 30)).
        format_only: only write ``submission_vector.json`` (``--split test --format-only``).
        out_dir: where ``submission_vector.json`` goes (the test tool passes the work dir);
            without it a temporary folder is used and removed after the evaluation.
        n_workers: processes for the matching (0: in this process; the result is the same).
        submission_meta: overrides of the submission's ``meta`` block (method, authors, ...).
        collect_device, collect_dir, prefix: mmengine ``BaseMetric``.

    Returns ``{<class>: AP, <class>/AP@<thr>: AP, 'mAP': mAP}`` (fractions, as the evaluator
    returns them; the README reports x100) and prints the published table.
    """

    default_prefix = "chamfer"

    def __init__(
        self,
        ann_file: str | None = None,
        roi_size: Sequence[float] = ROI_SIZE,
        format_only: bool = False,
        out_dir: str | None = None,
        n_workers: int = 0,
        submission_meta: Mapping[str, Any] | None = None,
        collect_device: str = "cpu",
        collect_dir: str | None = None,
        prefix: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if format_only and out_dir is None:
            raise ValueError(
                "VectorMapMetric: format_only=True needs out_dir (where submission_vector.json goes)"
            )
        if len(roi_size) != 2:
            raise ValueError(f"VectorMapMetric: roi_size must be (x, y) metres, got {roi_size}")
        self.ann_file = ann_file
        self.roi_size = tuple(float(v) for v in roi_size)
        self.format_only = format_only
        self.out_dir = out_dir
        self.n_workers = n_workers
        self.submission_meta = default_meta(**dict(submission_meta or {}))
        self.last_submission: str | None = None

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        for sample in data_samples:
            self.results.append(sample_prediction(sample))

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if self.out_dir is not None:
            return self._write_and_evaluate(results, self.out_dir)
        with tempfile.TemporaryDirectory(prefix="vectormap_eval_") as tmp:
            return self._write_and_evaluate(results, tmp)

    def _write_and_evaluate(self, results: list[dict], out_dir: str) -> dict[str, float]:
        os.makedirs(out_dir, exist_ok=True)
        path = format_results(results, out_dir, self.roi_size, self.submission_meta)
        self.last_submission = osp.abspath(path) if self.out_dir is not None else None
        if self.format_only:
            print_log(f"Results written to {osp.abspath(path)} ({len(results)} frames)", logger="current")
            return {}
        ann_file = self.ann_file or (self.dataset_meta or {}).get("ann_file")
        if ann_file is None:
            raise ValueError(
                "VectorMapMetric: no ground truth: give ann_file, or evaluate an AV2Dataset (its "
                "metainfo names its annotation file); format_only=True only writes the submission"
            )
        evaluator = VectorEvaluate(ann_file, n_workers=self.n_workers)
        evaluator.evaluate(path, logger="current")
        full = evaluator.last_result
        metrics: dict[str, float] = {}
        for cat in ID2CAT.values():
            metrics[cat] = float(full[cat]["AP"])
            for thr in THRESHOLDS:
                metrics[f"{cat}/AP@{thr}"] = float(full[cat][f"AP@{thr}"])
        metrics["mAP"] = float(full["mAP"])
        return metrics
