"""A small Argoverse 2 online-map dataset in the published on-disk format (driving_hdmap.md
§2.3), for tests: ``<root>/{split}_annotations.json`` and the camera images at
``<root>/<segment_id>/image/<camera>/<timestamp>.jpg`` (``image_path`` relative to the
root, as the dataset joins it).

The AV2 ring of 7 cameras (yaws 0, +-45, +-99, +-153 degrees; the front-centre camera
portrait, the others landscape, as in AV2), 1.6 m above the ground looking level, so the
ground of the 60 m x 30 m map box is in view. Map lines are a straight road with
dividers, boundaries and ped-crossing outlines that shift per segment and move with the
ego between frames; every image shows the lines that fall in its view (class-coloured),
so images and labels are related.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CAMERAS = (  # name, yaw in degrees (ego frame: x forward, y left, z up)
    ("ring_front_center", 0.0),
    ("ring_front_left", 45.0),
    ("ring_front_right", -45.0),
    ("ring_side_left", 99.0),
    ("ring_side_right", -99.0),
    ("ring_rear_left", 153.0),
    ("ring_rear_right", -153.0),
)
CAMERA_HEIGHT = 1.6  # metres above the ground (z = 0)
FOCAL_PER_WIDTH = 0.866  # AV2 ring: ~1773 px focal length at 2048 px width
COLOURS = {"ped_crossing": (0, 0, 255), "divider": (0, 255, 0), "boundary": (255, 0, 0)}  # BGR
ROI = (60.0, 30.0)


def camera_intrinsic(width: int, height: int) -> np.ndarray:
    f = FOCAL_PER_WIDTH * max(width, height)  # one lens on every ring camera, portrait or not
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def camera_extrinsic(yaw_deg: float, offset: float = 1.0) -> np.ndarray:
    """Ego -> camera 4x4 for a level camera looking along ``yaw``, ``offset`` metres out
    from the ego origin. Camera axes: x right, y down, z forward."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rot = np.stack([right, down, forward])  # rows: camera axes in ego coordinates
    centre = offset * forward + np.array([0.0, 0.0, CAMERA_HEIGHT])
    ext = np.eye(4)
    ext[:3, :3] = rot
    ext[:3, 3] = -rot @ centre
    return ext


def _map_lines(rng: np.random.Generator, shift_y: float, phase: float) -> dict[str, list[np.ndarray]]:
    """Road lines in the ego frame, truncated to the ROI, as N x 4 (x, y, z, visibility)."""
    half_x, half_y = ROI[0] / 2, ROI[1] / 2
    xs = np.linspace(-half_x, half_x, 7)

    def line(y: float, bend: float = 0.0) -> np.ndarray:
        ys = y + bend * np.sin(xs / half_x * math.pi)
        pts = np.stack([xs, ys, np.full_like(xs, rng.uniform(-0.05, 0.05)), np.ones_like(xs)], 1)
        return pts[np.abs(pts[:, 1]) <= half_y]

    lanes = 3.5
    dividers = [line(shift_y + k * lanes, rng.uniform(-0.5, 0.5)) for k in (-1, 0, 1)]
    boundaries = [line(shift_y + s * 1.5 * lanes, rng.uniform(-0.3, 0.3)) for s in (-1, 1)]
    crossings = []
    for cx in ((phase % 40.0) - 20.0, (phase % 40.0) - 5.0):
        if abs(cx) + 2 > half_x:
            continue
        x0, x1 = cx - 2.0, cx + 2.0
        y0, y1 = shift_y - 1.5 * lanes, shift_y + 1.5 * lanes
        ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        ring[:, 1] = np.clip(ring[:, 1], -half_y, half_y)
        crossings.append(np.concatenate([ring, np.zeros((5, 1)), np.ones((5, 1))], 1))
    out = {"ped_crossing": crossings, "divider": dividers, "boundary": boundaries}
    return {k: [v for v in lines if len(v) >= 2] for k, lines in out.items()}


def _render(
    lines: dict[str, list[np.ndarray]], ego2img: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 90, dtype=np.uint8)
    img[: h // 2] = (200, 170, 140)  # sky above the horizon of a level camera
    img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    thickness = max(1, w // 64)
    for cat, cat_lines in lines.items():
        for line in cat_lines:
            # Densify so segments crossing the image plane are clipped at the near side.
            dense = np.concatenate(
                [np.linspace(a, b, 20, endpoint=False) for a, b in zip(line[:-1], line[1:])] + [line[-1:]]
            )
            pts = np.concatenate([dense[:, :3], np.ones((len(dense), 1))], 1) @ ego2img.T
            front = pts[:, 2] > 0.5
            uv = pts[:, :2] / np.where(front, pts[:, 2], 1.0)[:, None]
            runs, run = [], []
            for ok, p in zip(front, uv):
                if ok and np.all(np.abs(p) < 10 * max(w, h)):
                    run.append(p)
                elif run:
                    runs.append(run)
                    run = []
            if run:
                runs.append(run)
            for r in runs:
                if len(r) >= 2:
                    cv2.polylines(
                        img, [np.round(np.array(r)).astype(np.int32)], False, COLOURS[cat], thickness
                    )
    return img


def make_av2_dataset(
    root: str | os.PathLike,
    *,
    segments: int = 2,
    frames_per_segment: int = 2,
    image_size: tuple[int, int] = (64, 48),
    splits: tuple[str, ...] = ("train", "val"),
    seed: int = 0,
) -> dict[str, Any]:
    """Write the dataset; returns ``{'root', '<split>_ann': path, 'tokens': {split: [...]}}``.

    ``image_size`` is (W, H) of the landscape cameras; the front-centre camera is (H, W),
    portrait, as in AV2. A 'test' split is written without ``annotation`` (an assumption:
    the published test pipeline reads no map lines).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = image_size
    out: dict[str, Any] = {"root": str(root), "tokens": {}}
    base_ts = 315_967_376_859_506_000  # AV2 timestamps are nanoseconds (strings in the files)
    for s_idx, split in enumerate(splits):
        ann: dict[str, list[dict[str, Any]]] = {}
        tokens = []
        for seg in range(segments):
            seg_id = str(uuid.UUID(bytes=rng.bytes(16)))  # AV2 log ids are UUIDs
            shift_y = rng.uniform(-2.0, 2.0)
            yaw0 = rng.uniform(-math.pi, math.pi)
            start = rng.uniform(0, 100)
            frames = []
            for k in range(frames_per_segment):
                ts = str(base_ts + (s_idx * 1000 + seg * 100 + k) * 100_000_000)  # 10 Hz
                travelled = start + 1.5 * k  # 15 m/s
                lines = _map_lines(rng, shift_y, travelled)
                sensor = {}
                for cam, yaw in CAMERAS:
                    size = (h, w) if cam == "ring_front_center" else (w, h)
                    intrinsic = camera_intrinsic(*size)
                    extrinsic = camera_extrinsic(yaw)
                    rel = f"{seg_id}/image/{cam}/{ts}.jpg"
                    path = root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    k4 = np.eye(4)
                    k4[:3, :3] = intrinsic
                    if not cv2.imwrite(str(path), _render(lines, k4 @ extrinsic, size, rng)):
                        raise OSError(f"could not write {path}")
                    sensor[cam] = {
                        "image_path": rel,
                        "intrinsic": intrinsic.tolist(),
                        "extrinsic": extrinsic.tolist(),
                    }
                c, s_ = math.cos(yaw0), math.sin(yaw0)
                frame = {
                    "segment_id": seg_id,
                    "timestamp": ts,
                    "sensor": sensor,
                    "pose": {
                        "ego2global_translation": [travelled * c, travelled * s_, 0.0],
                        "ego2global_rotation": [[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]],
                    },
                }
                if split != "test":
                    frame["annotation"] = {k_: [ln.tolist() for ln in v] for k_, v in lines.items()}
                frames.append(frame)
                tokens.append(ts)
            ann[seg_id] = frames
        path = root / f"{split}_annotations.json"
        path.write_text(json.dumps(ann))
        out[f"{split}_ann"] = str(path)
        out["tokens"][split] = tokens
    return out
