"""The map side of the published data pipeline as pure functions (driving_hdmap_params.md
§5.2, §5.7, §6.1-6.3): annotation lines -> ``VectorizeMap`` (2-D, simplified, normalised)
-> ``PolygonizeLocalMapBbox`` (condition boxes, detector keypoints, vertex token
sequences and their loss weights). The transforms of the next session wrap these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from shapely.geometry import LineString
from shapely.geometry.base import BaseGeometry

from .chamfer_ap import CAT2ID

ROI_SIZE = (60.0, 30.0)
CANVAS_SIZE = (200, 100)  # (x, y) cells of 0.3 m
SIMPLIFY_TOLERANCE = 0.2  # metres
BBOX_THRESHOLD = 4 / 200  # minimum normalised box side before buffering


def map_geoms_from_frame(frame: Mapping[str, Any]) -> dict[int, list[LineString]]:
    """``{label: [LineString (x, y, z)]}`` of one annotation frame, as ``AV2Dataset`` builds
    ``map_geoms``: the ``[:, :3]`` of every line, classes in ``CAT2ID`` order."""
    token = frame.get("timestamp")
    annotation = frame.get("annotation")
    if not isinstance(annotation, Mapping):
        raise ValueError(f"frame {token}: no 'annotation' dict")
    out = {}
    for cat, label in CAT2ID.items():
        if cat not in annotation:
            raise ValueError(f"frame {token}: annotation has no {cat!r}")
        lines = []
        for k, line in enumerate(annotation[cat]):
            arr = np.asarray(line, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 3:
                raise ValueError(f"frame {token}: {cat}[{k}] must be (N >= 2, >= 3) points, got {arr.shape}")
            lines.append(LineString(arr[:, :3]))
        out[label] = lines
    return out


def normalize_line(line: np.ndarray, roi_size: Sequence[float] = ROI_SIZE) -> np.ndarray:
    """Ego metres to the model's (0, 1) frame: ``(p - origin) / (roi + 2)`` with
    ``origin = -roi / 2`` = (-30, -15). As published the 2 m margin lies only beyond +x
    and +y: x = -30 maps to 0, x = +30 to 60/62. ``submission.denormalize_vectors`` inverts it."""
    roi = np.asarray(roi_size, dtype=np.float64)
    return (np.asarray(line, dtype=np.float64) - (-roi / 2)) / (roi + 2)


def vectorize_map(
    map_geoms: Mapping[int, Sequence[Any]],
    coords_dim: int = 2,
    roi_size: Sequence[float] = ROI_SIZE,
    simplify: bool = True,
    normalize: bool = True,
) -> dict[int, list[np.ndarray]]:
    """``VectorizeMap``: per line, keep ``coords_dim`` coordinates, simplify with
    tolerance 0.2 m (``preserve_topology=True``, in metres), then normalise. Lines are not
    clipped (the annotations are pre-truncated to the ROI); non-line geometries are skipped."""
    if coords_dim not in (2, 3):
        raise ValueError(f"coords_dim must be 2 or 3, got {coords_dim}")
    out: dict[int, list[np.ndarray]] = {}
    for label, geoms in map_geoms.items():
        vecs = []
        for geom in geoms:
            if isinstance(geom, BaseGeometry) and not isinstance(geom, LineString):
                continue  # polygons and points are not lines: skipped as published
            if not isinstance(geom, LineString):
                geom = np.asarray(geom, dtype=np.float64)
                if geom.ndim != 2 or geom.shape[0] < 2:
                    raise ValueError(f"label {label}: a line must be (N >= 2, >= 2) points, got {geom.shape}")
                geom = LineString(geom)
            line = LineString(np.asarray(geom.coords)[:, :coords_dim])
            if simplify:
                line = line.simplify(SIMPLIFY_TOLERANCE, preserve_topology=True)
            coords = np.asarray(line.coords, dtype=np.float64)
            if normalize:
                coords = coords.copy()
                coords[:, :2] = normalize_line(coords[:, :2], roi_size)
            vecs.append(coords)
        out[label] = vecs
    return out


def get_bbox(line: np.ndarray, threshold: float = BBOX_THRESHOLD) -> np.ndarray:
    """``[[minx, miny], [maxx, maxy]]`` of a normalised polyline; a box thinner than
    ``threshold`` on either side is replaced by the envelope of the line buffered by
    ``max((threshold - min(W, H)) / 2, 1e-4)`` (shapely's default round buffer), then
    clipped to [0, 1]."""
    ls = LineString(np.asarray(line, dtype=np.float64)[:, :2])
    minx, miny, maxx, maxy = ls.bounds
    w, h = maxx - minx, maxy - miny
    if w < threshold or h < threshold:
        r = max((threshold - min(w, h)) / 2, 1e-4)
        minx, miny, maxx, maxy = ls.buffer(r).envelope.bounds
    return np.clip(np.array([[minx, miny], [maxx, maxy]], dtype=np.float64), 0, 1)


def quantize_vertices(line: np.ndarray, canvas_size: Sequence[int] = CANVAS_SIZE) -> np.ndarray:
    """Normalised (0, 1) vertices to integer cells ``(int(x * 199), int(y * 99))``
    (truncation, as the published ``astype(int32)``)."""
    scale = np.asarray(canvas_size, dtype=np.float64) - 1
    return (np.asarray(line, dtype=np.float64)[:, :2] * scale).astype(np.int32)


def line_to_tokens(line: np.ndarray, canvas_size: Sequence[int] = CANVAS_SIZE) -> np.ndarray:
    """Generator target sequence: ``[qx1+1, qy1+1, qx2+1, ..., 0]`` (0 = stop), length 2n+1."""
    q = quantize_vertices(line, canvas_size).reshape(-1) + 1
    return np.concatenate([q, np.zeros(1, dtype=np.int32)]).astype(np.int32)


def evaluate_line(line: np.ndarray) -> np.ndarray:
    """Boundary token weights (§5.7): vertex weights from the adjacent edge lengths in
    normalised space (ends: their one edge; interior: the mean of both), normalised to sum
    1, halved onto the x and y token, plus ``1 / (2n)`` for the stop token."""
    pts = np.asarray(line, dtype=np.float64)[:, :2]
    n = len(pts)
    if n < 2:
        raise ValueError(f"evaluate_line needs >= 2 vertices, got {n}")
    edges = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    v = np.empty(n)
    v[0], v[-1] = edges[0], edges[-1]
    v[1:-1] = (edges[:-1] + edges[1:]) / 2
    total = v.sum()
    v = v / (total if total != 0 else 1.0)
    return np.concatenate([np.repeat(v / 2, 2), [1 / (2 * n)]])


def polygonize_local_map_bbox(
    vectors: Mapping[int, Sequence[np.ndarray]],
    canvas_size: Sequence[int] = CANVAS_SIZE,
    coord_dim: int = 2,
    num_class: int = 3,
    threshold: float = BBOX_THRESHOLD,
) -> dict[str, Any] | list:
    """``PolygonizeLocalMapBbox`` on ``vectorize_map``'s output. Lines in label order, then
    file order (the same order for detector and generator targets).

    Returns ``[]`` for a sample without lines (the model drops it), else a dict of
    ``keypoint (n, 4) float32`` (corners x*200, y*100, x clipped to [0.1, 199.9], y to
    [0.1, 99.9]), ``qkeypoint (n, 4) int32`` (``int(x*199), int(y*99)``, no +1),
    ``det_label`` / ``gen_label (n,) int64``, and per line ``polylines`` (int32 tokens),
    ``polyline_masks`` (bool ones) and ``polyline_weights`` (float64).
    """
    if coord_dim != 2:
        raise ValueError(f"coord_dim: only 2 is published and supported, got {coord_dim}")
    cw, ch = canvas_size
    keypoints, qkeypoints, labels, seqs, masks, weights = [], [], [], [], [], []
    for label in sorted(vectors):
        if not 0 <= label < num_class:
            raise ValueError(f"label {label} outside [0, {num_class})")
        for line in vectors[label]:
            line = np.asarray(line, dtype=np.float64)[:, :2]
            bbox = get_bbox(line, threshold)
            kp = bbox * np.array([cw, ch], dtype=np.float64)
            kp[:, 0] = np.clip(kp[:, 0], 0.1, cw - 0.1)
            kp[:, 1] = np.clip(kp[:, 1], 0.1, ch - 0.1)
            keypoints.append(kp.reshape(-1).astype(np.float32))
            qkeypoints.append(quantize_vertices(bbox, canvas_size).reshape(-1))
            labels.append(label)
            tokens = line_to_tokens(line, canvas_size)
            seqs.append(tokens)
            masks.append(np.ones(len(tokens), dtype=bool))
            n = len(line)
            if label == 2:  # boundary: length-aware weights
                weights.append(evaluate_line(line))
            else:
                weights.append(np.full(2 * n + 1, 1 / (2 * n + 1)))
    if not labels:
        return []
    lab = np.asarray(labels, dtype=np.int64)
    return dict(
        keypoint=np.stack(keypoints),
        qkeypoint=np.stack(qkeypoints).astype(np.int32),
        det_label=lab,
        gen_label=lab.copy(),
        polylines=seqs,
        polyline_masks=masks,
        polyline_weights=weights,
    )
