"""The submission / prediction pickle (driving_openlane.md §3.3): building one frame's
predictions from the model output (``format_preds``), the validity check
(``check_results``), writing and reading the file.

``{method, authors, e-mail, institution / company, country / region,
results{(split, segment_id, timestamp): {'predictions': {lane_centerline[{id, points,
confidence}], traffic_element[{id, attribute, points (2, 2), confidence}],
topology_lclc (L, L), topology_lcte (L, T)}}}}``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .bezier import decode_bezier
from .fileio import atomic_pickle_dump, safe_pickle_load

META_KEYS = ("method", "authors", "e-mail", "institution / company", "country / region")
MAX_AUTHORS = 10
NUM_ATTRIBUTES = 13
LANE_ID_OFFSET = 1000  # published ids: lanes 1000 + i, traffic elements 2000 + i
TE_ID_OFFSET = 2000


def format_preds(
    pred_lc: Sequence[np.ndarray],
    pred_te: Sequence[np.ndarray],
    pred_topology_lclc: np.ndarray,
    pred_topology_lcte: np.ndarray,
    *,
    published_topology_order: bool = False,
) -> dict[str, Any]:
    """One frame's ``{'predictions': ...}`` from the model's test output.

    ``pred_lc = [control points (N, 15), scores (N, 1)]``, ``pred_te = [det (M, 5) = xyxy +
    attribute, scores (M,)]``, topology sigmoids ``(N, N)`` / ``(N, M)`` in query order.
    Lanes are sorted by ascending score and decoded to 11 points, as published. The
    published code leaves the topology matrices in query order, so the evaluator pairs
    them with the wrong lanes; here their lane axes get the same permutation
    (``published_topology_order=True`` restores the published mispairing)."""
    lanes = np.asarray(pred_lc[0], dtype=np.float32)
    lane_scores = np.asarray(pred_lc[1], dtype=np.float32).reshape(len(lanes), -1)[:, 0]
    det = np.asarray(pred_te[0], dtype=np.float32).reshape(-1, 5)
    te_scores = np.asarray(pred_te[1], dtype=np.float32).reshape(-1)
    lclc = np.asarray(pred_topology_lclc, dtype=np.float32)
    lcte = np.asarray(pred_topology_lcte, dtype=np.float32)
    if len(te_scores) != len(det):
        raise ValueError(f"format_preds: pred_te has {len(det)} boxes but {len(te_scores)} scores")
    if lclc.shape != (len(lanes), len(lanes)) or lcte.shape != (len(lanes), len(det)):
        raise ValueError(
            f"format_preds: topology shapes {lclc.shape} / {lcte.shape}, expected "
            f"{(len(lanes), len(lanes))} / {(len(lanes), len(det))}"
        )
    order = np.argsort(lane_scores, kind="stable")  # ascending, as published
    points = decode_bezier(lanes[order], 11)
    if not published_topology_order:
        lclc = lclc[np.ix_(order, order)]
        lcte = lcte[order]
    return {
        "predictions": {
            "lane_centerline": [
                {"id": i + LANE_ID_OFFSET, "points": points[i], "confidence": float(lane_scores[k])}
                for i, k in enumerate(order)
            ],
            "traffic_element": [
                {"id": i + TE_ID_OFFSET, "attribute": float(det[i, 4]), "points": det[i, :4].reshape(2, 2),
                 "confidence": float(te_scores[i])}
                for i in range(len(det))
            ],
            "topology_lclc": lclc,
            "topology_lcte": lcte,
        }
    }


def make_submission(
    results: Mapping[tuple, Mapping[str, Any]],
    method: str = "ROAD_BEVFormer",
    authors: Sequence[str] = (),
    email: str = "",
    institution: str = "",
    country: str = "",
) -> dict[str, Any]:
    """The submission dict around ``results{token: {'predictions': ...}}``."""
    return {
        "method": method, "authors": list(authors), "e-mail": email, "institution / company": institution,
        "country / region": country, "results": dict(results),
    }


def _finite_array(value: Any, shape_ok, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be numeric, got {type(value).__name__}") from err
    if not shape_ok(arr.shape):
        raise ValueError(f"{what} has shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} is not finite")
    return arr


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} = {value!r} is not finite")
    return float(value)


def _check_ids(items: Sequence[Mapping], what: str) -> None:
    ids = [x["id"] for x in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: ids must be unique")


def check_frame(token: Any, frame: Any) -> None:
    """Validate one ``results[token]`` entry; raises ValueError naming token and field."""
    where = f"results[{token!r}]"
    if not isinstance(frame, Mapping) or not isinstance(frame.get("predictions"), Mapping):
        raise ValueError(f"{where} must be {{'predictions': {{...}}}}")
    pred = frame["predictions"]
    need = {"lane_centerline", "traffic_element", "topology_lclc", "topology_lcte"}
    if not need <= set(pred):
        raise ValueError(f"{where}['predictions'] lacks {sorted(need - set(pred))}")
    lanes, tes = pred["lane_centerline"], pred["traffic_element"]
    if not isinstance(lanes, Sequence) or not isinstance(tes, Sequence):
        raise ValueError(f"{where}: lane_centerline and traffic_element must be lists")
    for i, lane in enumerate(lanes):
        w = f"{where} lane_centerline[{i}]"
        if not isinstance(lane, Mapping) or not {"id", "points", "confidence"} <= set(lane):
            raise ValueError(f"{w} must hold 'id', 'points' and 'confidence'")
        _finite_array(lane["points"], lambda s: len(s) == 2 and s[0] >= 2 and s[1] == 3,
                      f"{w}['points'] (n >= 2, 3)")
        _check_number(lane["confidence"], f"{w}['confidence']")
    for i, te in enumerate(tes):
        w = f"{where} traffic_element[{i}]"
        if not isinstance(te, Mapping) or not {"id", "attribute", "points", "confidence"} <= set(te):
            raise ValueError(f"{w} must hold 'id', 'attribute', 'points' and 'confidence'")
        _finite_array(te["points"], lambda s: s == (2, 2), f"{w}['points'] (2, 2)")
        attr = _check_number(te["attribute"], f"{w}['attribute']")
        if attr != int(attr) or not 0 <= attr < NUM_ATTRIBUTES:
            raise ValueError(f"{w}['attribute'] = {te['attribute']!r}, expected an integer 0..12")
        _check_number(te["confidence"], f"{w}['confidence']")
    _check_ids(lanes, f"{where} lane_centerline")
    _check_ids(tes, f"{where} traffic_element")
    n, m = len(lanes), len(tes)
    for key, shape in (("topology_lclc", (n, n)), ("topology_lcte", (n, m))):
        arr = _finite_array(pred[key], lambda s, shape=shape: s == shape or (0 in shape and np.prod(s) == 0),
                            f"{where}['{key}'] (expected {shape})")
        # Probabilities: the evaluator cuts at 0.5, so logits would be scored silently wrong.
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{where}['{key}'] must hold probabilities in [0, 1]")


def check_results(submission: Any) -> None:
    """The published ``check_results``: the meta fields and every frame's predictions.

    ``country / region`` is checked against ISO 3166 only when the ``iso3166`` package is
    installed (it is not part of our stack); otherwise it must be a string."""
    if not isinstance(submission, Mapping):
        raise ValueError(f"submission must be a dict, got {type(submission).__name__}")
    missing = [k for k in (*META_KEYS, "results") if k not in submission]
    if missing:
        raise ValueError(f"submission lacks {missing}")
    for key in ("method", "e-mail", "institution / company", "country / region"):
        if not isinstance(submission[key], str):
            raise ValueError(f"submission['{key}'] must be a string")
    authors = submission["authors"]
    if not isinstance(authors, (list, tuple)) or len(authors) > MAX_AUTHORS or \
            not all(isinstance(a, str) for a in authors):
        raise ValueError(f"submission['authors'] must be a list of at most {MAX_AUTHORS} strings")
    country = submission["country / region"]
    if country:
        try:
            import iso3166
        except ImportError:
            iso3166 = None
        if iso3166 is not None and country not in iso3166.countries:
            raise ValueError(f"submission['country / region'] = {country!r} is not an ISO 3166 country")
    results = submission["results"]
    if not isinstance(results, Mapping):
        raise ValueError("submission['results'] must be a dict {(split, segment_id, timestamp): frame}")
    for token, frame in results.items():
        if not isinstance(token, tuple) or len(token) != 3:
            raise ValueError(f"results key {token!r} must be a (split, segment_id, timestamp) tuple")
        check_frame(token, frame)


def dump_submission(submission: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Check, then write the pickle atomically (the ``dump=True dump_dir=...`` output)."""
    check_results(submission)
    return atomic_pickle_dump(dict(submission), path)


def load_submission(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a submission pickle without letting it run code."""
    submission = safe_pickle_load(path)
    check_results(submission)
    return submission
