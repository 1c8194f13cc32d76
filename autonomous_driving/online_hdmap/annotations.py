"""The published ``{train,val,test}_annotations.json`` read unchanged (driving_hdmap.md §2.3).

Layout: ``{segment_id: [frame, ...]}`` (time-ordered), each frame with ``segment_id``,
``timestamp`` (the token), ``sensor{camera: {image_path, intrinsic 3x3, extrinsic 4x4
ego->cam}}``, ``annotation{ped_crossing|divider|boundary: [line (N x 4: x, y, z,
visibility)]}`` and ``pose{ego2global_translation, ego2global_rotation}``. Everything
here is dataset-agnostic: the dataset class, the evaluator and the tools all use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .chamfer_ap import CAT2ID

# The AV2 ring, in the order of the published annotation files' ``sensor`` dicts.
AV2_CAMERAS = (
    "ring_front_center",
    "ring_front_left",
    "ring_front_right",
    "ring_side_left",
    "ring_side_right",
    "ring_rear_left",
    "ring_rear_right",
)


def load_annotations(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The annotation json as published: ``{segment_id: [frame, ...]}``, key order kept."""
    with open(path, encoding="utf-8") as f:
        ann = json.load(f)
    if not isinstance(ann, dict):
        raise ValueError(f"{path}: expected {{segment_id: [frame, ...]}}, got a {type(ann).__name__}")
    for seg, frames in ann.items():
        if not isinstance(frames, list):
            raise ValueError(
                f"{path}: segment {seg!r} must map to a list of frames, got {type(frames).__name__}"
            )
        for i, frame in enumerate(frames):
            if not isinstance(frame, dict) or "timestamp" not in frame:
                raise ValueError(f"{path}: segment {seg!r} frame {i} has no 'timestamp' (the sample token)")
    return ann


def iter_frames(ann: Mapping[str, list[dict[str, Any]]], interval: int = 1) -> Iterator[dict[str, Any]]:
    """Frames flattened in file order (segments, then time), every ``interval``-th one
    of the flattened list, as the published ``AV2Dataset`` does."""
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be a positive int, got {interval!r}")
    flat = [frame for frames in ann.values() for frame in frames]
    yield from flat[::interval]


def frame_token(frame: Mapping[str, Any]) -> str:
    """The sample token: the frame's ``timestamp``, compared as a string because json
    result keys always are."""
    return str(frame["timestamp"])


def frame_map_lines(frame: Mapping[str, Any], dims: int = 2) -> dict[str, list[np.ndarray]]:
    """``{class name: [line (N, dims) float64]}`` for the three classes, in ``CAT2ID`` order.

    ``dims=2`` is what the metric uses (``[:, :2]``), ``dims=3`` what the dataset turns
    into LineStrings (``[:, :3]``). A missing class is an error (the published code would
    fail with a KeyError), an empty list is a class without lines.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    token = frame.get("timestamp")
    annotation = frame.get("annotation")
    if not isinstance(annotation, Mapping):
        raise ValueError(f"frame {token}: no 'annotation' dict (test split annotations carry no map lines)")
    out = {}
    for cat in CAT2ID:
        if cat not in annotation:
            raise ValueError(f"frame {token}: annotation has no {cat!r} (keys: {sorted(annotation)})")
        lines = []
        for k, line in enumerate(annotation[cat]):
            arr = np.asarray(line, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] < dims or arr.shape[0] < 2:
                raise ValueError(
                    f"frame {token}: {cat}[{k}] must be (N >= 2, >= {dims}) points, got shape {arr.shape}"
                )
            lines.append(arr[:, :dims])
        out[cat] = lines
    return out


def load_ground_truth(path: str | os.PathLike) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{token: {class name: [line (N, 2)]}}`` in file order: what the metric compares
    against (not simplified). A token seen twice is an error (the published evaluator
    silently kept the last one)."""
    gts: dict[str, dict[str, list[np.ndarray]]] = {}
    for frame in iter_frames(load_annotations(path)):
        token = frame_token(frame)
        if token in gts:
            raise ValueError(f"{path}: token {token} appears twice")
        gts[token] = frame_map_lines(frame, dims=2)
    return gts


def camera_matrices(frame: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per camera, in the ``sensor`` dict order: ``image_path`` (relative, as stored),
    ``intrinsic`` (3, 3), ``extrinsic`` (4, 4, ego->cam) and ``ego2img = pad4(K) @ extrinsic``."""
    sensor = frame.get("sensor")
    if not isinstance(sensor, Mapping) or not sensor:
        raise ValueError(f"frame {frame.get('timestamp')}: no 'sensor' dict")
    out = {}
    for cam, info in sensor.items():
        intrinsic = np.asarray(info["intrinsic"], dtype=np.float64)
        extrinsic = np.asarray(info["extrinsic"], dtype=np.float64)
        if intrinsic.shape != (3, 3) or extrinsic.shape != (4, 4):
            raise ValueError(
                f"frame {frame.get('timestamp')}: camera {cam}: intrinsic must be 3x3 and extrinsic 4x4, "
                f"got {intrinsic.shape} and {extrinsic.shape}"
            )
        k4 = np.eye(4)
        k4[:3, :3] = intrinsic
        out[cam] = dict(
            image_path=info["image_path"], intrinsic=intrinsic, extrinsic=extrinsic, ego2img=k4 @ extrinsic
        )
    return out


def frame_to_sample(frame: Mapping[str, Any], root_path: str | os.PathLike) -> dict[str, Any]:
    """What the published ``AV2Dataset.get_sample`` gathers from one frame: ``token``,
    ``segment_id``, ``img_filenames`` (``root_path/image_path``), per camera ``cam_names``,
    ``intrinsics``, ``extrinsics``, ``ego2img`` (all in ``sensor`` order), the ego pose, and
    ``map_geoms`` ``{label: [LineString (x, y, z)]}`` when the frame is annotated."""
    from .vectorize import map_geoms_from_frame  # shapely, only needed here

    cams = camera_matrices(frame)
    pose = frame.get("pose", {})
    sample: dict[str, Any] = {
        "token": frame_token(frame),
        "segment_id": frame.get("segment_id"),
        "cam_names": list(cams),
        "img_filenames": [os.path.join(os.fspath(root_path), c["image_path"]) for c in cams.values()],
        "intrinsics": [c["intrinsic"] for c in cams.values()],
        "extrinsics": [c["extrinsic"] for c in cams.values()],
        "ego2img": [c["ego2img"] for c in cams.values()],
        "ego2global_translation": np.asarray(
            pose.get("ego2global_translation", np.zeros(3)), dtype=np.float64
        ),
        "ego2global_rotation": np.asarray(pose.get("ego2global_rotation", np.eye(3)), dtype=np.float64),
    }
    if "annotation" in frame:
        sample["map_geoms"] = map_geoms_from_frame(frame)
    return sample
