"""The Online-HD-Map evaluator (published ``VectorEvaluate``): a submission against the
annotation json, per class and threshold, printed as the published table."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from functools import partial
from multiprocessing import Pool
from typing import Any

import numpy as np

from .annotations import load_ground_truth
from .chamfer_ap import ID2CAT, SAMPLE_DIST, THRESHOLDS, accumulate_ap, evaluate_frame
from .submission import read_submission, validate_submission


def chamfer_map(
    gts: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
    results: Mapping[str, Mapping[str, Any]],
    thresholds: Sequence[float] = THRESHOLDS,
    sample_dist: float = SAMPLE_DIST,
    n_workers: int = 0,
) -> dict[str, Any]:
    """``{class: {num_gts, num_preds, AP@thr..., AP}, 'mAP': float}`` (fractions, not x100).

    ``gts`` is ``{token: {class name: [line (N, 2)]}}``; ``results`` the submission's
    ``results``. Frames are visited in GT order; a GT frame without a result has no
    predictions, and result tokens absent from the GT are ignored. Class AP is the mean
    over the thresholds, mAP the mean over the classes; a class without any GT line
    scores 0 (published arithmetic: recall stays 0).
    """
    validate_submission({"results": results}, "results")
    if results and not set(map(str, results)) & set(gts):
        # Almost surely a submission for another split: the published evaluator would
        # silently report 0 everywhere.
        raise ValueError(
            f"none of the {len(results)} submission tokens is a frame of the annotations "
            f"({len(gts)} frames): wrong split or file?"
        )
    by_token = {str(k): v for k, v in results.items()}
    samples: dict[int, list[tuple]] = {label: [] for label in ID2CAT}
    num_gts = dict.fromkeys(ID2CAT, 0)
    num_preds = dict.fromkeys(ID2CAT, 0)
    for token, gt in gts.items():
        pred = by_token.get(token, {"vectors": [], "scores": [], "labels": []})
        vectors: dict[int, list] = {label: [] for label in ID2CAT}
        scores: dict[int, list] = {label: [] for label in ID2CAT}
        for vec, score, label in zip(pred["vectors"], pred["scores"], pred["labels"]):
            vectors[int(label)].append(vec)
            scores[int(label)].append(float(score))
        for label, cat in ID2CAT.items():
            samples[label].append((vectors[label], scores[label], gt[cat]))
            num_gts[label] += len(gt[cat])
            num_preds[label] += len(scores[label])

    fn = partial(evaluate_frame, thresholds=tuple(thresholds), sample_dist=sample_dist)
    pool = Pool(n_workers) if n_workers > 0 else None
    out: dict[str, Any] = {}
    try:
        for label, cat in ID2CAT.items():
            per_frame = pool.starmap(fn, samples[label]) if pool else [fn(*s) for s in samples[label]]
            entry: dict[str, Any] = {"num_gts": num_gts[label], "num_preds": num_preds[label]}
            for thr in thresholds:
                entry[f"AP@{thr}"] = accumulate_ap([f[thr] for f in per_frame], num_gts[label])
            entry["AP"] = sum(entry[f"AP@{thr}"] for thr in thresholds) / len(thresholds)
            out[cat] = entry
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    out["mAP"] = sum(out[cat]["AP"] for cat in ID2CAT.values()) / len(ID2CAT)
    return out


def format_table(result: Mapping[str, Any], thresholds: Sequence[float] = THRESHOLDS) -> str:
    """The published table: category, num_preds, num_gts, AP@thr..., AP, rounded to 4."""
    import prettytable

    table = prettytable.PrettyTable(
        ["category", "num_preds", "num_gts"] + [f"AP@{t}" for t in thresholds] + ["AP"]
    )
    for cat in ID2CAT.values():
        r = result[cat]
        table.add_row(
            [
                cat,
                r["num_preds"],
                r["num_gts"],
                *[round(r[f"AP@{t}"], 4) for t in thresholds],
                round(r["AP"], 4),
            ]
        )
    return str(table)


class VectorEvaluate:
    """Published evaluator: ``VectorEvaluate(ann_file, n_workers).evaluate(result_path)``.

    ``evaluate`` prints the table and ``mAP = x.xxxx`` and returns the published
    ``{class: AP}``; the whole result (per threshold, counts, mAP) is kept in
    ``self.last_result``.
    """

    def __init__(self, ann_file: str | os.PathLike, n_workers: int = 0) -> None:
        if not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"n_workers must be an int >= 0, got {n_workers!r}")
        self.gts = load_ground_truth(ann_file)
        self.n_workers = n_workers
        self.last_result: dict[str, Any] | None = None

    def evaluate(
        self,
        result_path: str | os.PathLike | Mapping[str, Any],
        metric: str = "chamfer",
        logger: logging.Logger | str | None = None,
    ) -> dict[str, float]:
        if metric != "chamfer":
            # The published AP.py also offered 'frechet'; the challenge metric is Chamfer.
            raise ValueError(f"metric: only 'chamfer' (the challenge metric) is implemented, got {metric!r}")
        sub = result_path if isinstance(result_path, Mapping) else read_submission(result_path)
        _log(f"\nevaluating {len(ID2CAT)} categories...", logger)
        start = time.time()
        result = chamfer_map(self.gts, sub["results"], n_workers=self.n_workers)
        _log(f"finished in {time.time() - start:.2f}s", logger)
        _log("\n" + format_table(result), logger)
        _log(f"mAP = {result['mAP']:.4f}\n", logger)
        self.last_result = result
        return {cat: result[cat]["AP"] for cat in ID2CAT.values()}


def _log(msg: str, logger: logging.Logger | str | None) -> None:
    if logger is None:
        print(msg)
    else:
        from mmengine.logging import print_log

        print_log(msg, logger=logger)
