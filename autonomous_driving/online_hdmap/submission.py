"""``submission_vector.json`` (driving_hdmap.md §2.3): building, writing and reading it.

``{meta{use_lidar, use_camera, use_external, output_format: 'vector', method, authors,
e-mail, institution / company, country / region}, results{token: {vectors [(N, 2)
metres], scores, labels}}}``.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .chamfer_ap import ID2CAT

ROI_SIZE = (60.0, 30.0)  # metres, x then y
META_KEYS = (
    "use_lidar",
    "use_camera",
    "use_external",
    "output_format",
    "method",
    "authors",
    "e-mail",
    "institution / company",
    "country / region",
)


def default_meta(**overrides: Any) -> dict[str, Any]:
    """The published meta block for this camera-only baseline, fields overridable."""
    unknown = set(overrides) - set(META_KEYS)
    if unknown:
        raise ValueError(f"unknown meta field(s) {sorted(unknown)}; the published ones are {list(META_KEYS)}")
    meta: dict[str, Any] = {
        "use_lidar": False,
        "use_camera": True,
        "use_external": False,
        "output_format": "vector",
        "method": "VectorMapNet",
        "authors": [],
        "e-mail": "",
        "institution / company": "",
        "country / region": "",
    }
    meta.update(overrides)
    return meta


def denormalize_vectors(
    vectors: Iterable[np.ndarray], roi_size: Sequence[float] = ROI_SIZE
) -> list[np.ndarray]:
    """Model output in (0, 1) to ego metres: ``v * (roi + 2) + origin``, ``origin = -roi/2``
    (the +2 m margin of the published normalisation)."""
    roi = np.asarray(roi_size, dtype=np.float64)
    origin = -roi / 2
    return [np.asarray(v, dtype=np.float64).reshape(-1, 2) * (roi + 2) + origin for v in vectors]


def format_sample(
    vectors: Sequence[np.ndarray],
    scores: Sequence[float],
    labels: Sequence[int],
    roi_size: Sequence[float] = ROI_SIZE,
) -> dict[str, list]:
    """One ``results[token]`` entry from normalised predictions: de-normalised, lines with
    fewer than 2 points dropped (with their score and label), as the published
    ``format_results``. No score threshold is applied (the published one never was)."""
    if not len(vectors) == len(scores) == len(labels):
        raise ValueError(
            f"vectors, scores and labels must have one length, got "
            f"{len(vectors)}, {len(scores)}, {len(labels)}"
        )
    out: dict[str, list] = {"vectors": [], "scores": [], "labels": []}
    for v, s, lab in zip(denormalize_vectors(vectors, roi_size), scores, labels):
        if len(v) < 2:
            continue
        out["vectors"].append(v.tolist())
        out["scores"].append(float(s))
        out["labels"].append(int(lab))
    return out


def format_results(
    predictions: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    roi_size: Sequence[float] = ROI_SIZE,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The dataset's ``format_results``: per-sample model outputs ``{'token', 'vectors'
    (normalised), 'scores', 'labels'}`` -> ``<out_dir>/submission_vector.json`` (atomic).
    A token seen twice is an error. Returns the file path."""
    results: dict[str, dict[str, list]] = {}
    for pred in predictions:
        token = str(pred["token"])
        if token in results:
            raise ValueError(f"format_results: token {token} predicted twice")
        results[token] = format_sample(pred["vectors"], pred["scores"], pred["labels"], roi_size)
    return write_submission(os.path.join(os.fspath(out_dir), "submission_vector.json"), results, meta)


def validate_submission(sub: Mapping[str, Any], source: str = "submission") -> None:
    """Raise naming the token and field on anything the evaluator could not score."""
    if not isinstance(sub, Mapping) or not isinstance(sub.get("results"), Mapping):
        raise ValueError(f"{source}: expected {{'meta': ..., 'results': {{token: ...}}}}")
    for token, pred in sub["results"].items():
        if not isinstance(pred, Mapping) or not {"vectors", "scores", "labels"} <= set(pred):
            raise ValueError(f"{source}: results[{token}] must hold 'vectors', 'scores' and 'labels'")
        n = len(pred["labels"])
        if len(pred["vectors"]) != n or len(pred["scores"]) != n:
            raise ValueError(
                f"{source}: results[{token}]: {len(pred['vectors'])} vectors, {len(pred['scores'])} scores, "
                f"{n} labels (must be equal)"
            )
        for i, (vec, lab, score) in enumerate(zip(pred["vectors"], pred["labels"], pred["scores"])):
            shape = np.shape(vec)
            if len(shape) != 2 or shape[0] < 2 or shape[1] != 2:
                raise ValueError(
                    f"{source}: results[{token}] vectors[{i}] has shape {shape}, expected (N >= 2, 2) metres"
                )
            if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)) or int(lab) not in ID2CAT:
                raise ValueError(
                    f"{source}: results[{token}] labels[{i}] = {lab!r}, expected one of {list(ID2CAT)}"
                )
            if not math.isfinite(float(score)):
                raise ValueError(f"{source}: results[{token}] scores[{i}] = {score!r} is not finite")


def write_submission(
    path: str | os.PathLike, results: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any] | None = None
) -> str:
    """Write ``submission_vector.json`` atomically (a temporary file in the same folder,
    then ``os.replace``), so an interrupted run never leaves half a file. Returns the path."""
    sub = {"meta": dict(default_meta() if meta is None else meta), "results": dict(results)}
    validate_submission(sub, str(path))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".submission_", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sub, f, default=_to_json)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _to_json(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} into a submission")


class _PlainDataUnpickler(pickle.Unpickler):
    """Only containers, numbers and numpy arrays: a submission pickle from someone else
    must not run code (the published evaluator unpickled it fully)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"submission pickle holds {module}.{name}; only dicts, lists, numbers and numpy arrays are read"
        )


def read_submission(path: str | os.PathLike) -> dict[str, Any]:
    """A submission in json (the format the tools write) or pickle (also accepted by the
    published evaluator; read without running code), validated."""
    path = os.fspath(path)
    if path.endswith((".pkl", ".pickle")):
        with open(path, "rb") as f:
            sub = _PlainDataUnpickler(io.BytesIO(f.read())).load()
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            sub = json.load(f)
    else:
        raise ValueError(f"{path}: a submission must be a .json (or .pkl) file")
    validate_submission(sub, path)
    return sub
