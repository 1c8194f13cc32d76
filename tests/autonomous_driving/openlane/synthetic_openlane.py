"""A small OpenLane-V2 dataset in the published on-disk format (driving_openlane.md §3.3), for
tests: ``<root>/<split>/<segment_id>/info/<timestamp>.json``,
``<root>/<split>/<segment_id>/image/<camera>/<timestamp>.jpg`` (``image_path`` relative to
the root) and ``<root>/data_dict_<subset>.json``.

The AV2 ring of 7 cameras (yaws 0, ±45, ±99, ±153 degrees; the front-centre camera portrait,
the others landscape, front camera first in the sensor dict), 1.6 m above the ground looking
level, camera → ego extrinsics. Lanes are a two-lane road in world coordinates (two lanes
each split in a before / after pair, so ``topology_lclc`` has real successor edges), seen
from an ego that drives along it, 201 raw points per lane as the shipped files have.
Traffic elements are boxes in the front image, each tied to one of the lanes ahead
(``topology_lcte``). Every image shows the lanes that fall in its view and the front image
the element boxes, so images and labels are related. The test split has no annotation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CAMERAS = (  # name, yaw in degrees (ego frame: x forward, y left, z up)
    ("ring_front_center", 0.0),
    ("ring_front_left", 45.0),
    ("ring_front_right", -45.0),
    ("ring_rear_left", 153.0),
    ("ring_rear_right", -153.0),
    ("ring_side_left", 99.0),
    ("ring_side_right", -99.0),
)
CAMERA_HEIGHT = 1.6
FOCAL_PER_SIDE = 0.866  # AV2 ring: ~1773 px focal length at 2048 px
RAW_POINTS = 201
LANE_WIDTH = 3.5
STEP = 4.0  # metres the ego drives between frames


def camera_sensor(yaw_deg: float, width: int, height: int) -> dict[str, Any]:
    """One ``sensor[camera]`` entry: camera → ego rotation (columns = the camera's right,
    down, forward axes in ego coordinates), the camera centre, a pinhole K."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rotation = np.stack([right, down, forward], axis=1)
    centre = 1.0 * forward + np.array([0.0, 0.0, CAMERA_HEIGHT])
    f = FOCAL_PER_SIDE * max(width, height)
    k = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return {
        "extrinsic": {"rotation": rotation.tolist(), "translation": centre.tolist()},
        "intrinsic": {"K": k.tolist(), "distortion": [0.0, 0.0, 0.0]},
    }


def _world_lanes(rng: np.random.Generator) -> list[np.ndarray]:
    """Four lanes in world coordinates: lane 0 -> 1 along y = 0 and lane 2 -> 3 along y = 3.5,
    the second half of each bending a little; all x in [-60, 100]."""
    bend = rng.uniform(-0.02, 0.02)
    lanes = []
    for y0 in (0.0, LANE_WIDTH):
        before = np.linspace(-60.0, 20.0, RAW_POINTS)
        after = np.linspace(20.0, 100.0, RAW_POINTS)
        lanes.append(np.stack([before, np.full(RAW_POINTS, y0), np.zeros(RAW_POINTS)], 1))
        y_after = y0 + bend * (after - 20.0) ** 2 / 10.0
        lanes.append(np.stack([after, y_after, 0.01 * (after - 20.0) / 8.0], 1))
    return lanes


def _pose(x: float, heading: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(heading), math.sin(heading)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), np.array([x, 0.3 * math.sin(x / 30.0), 0.0])


def _project(points_ego: np.ndarray, sensor: dict[str, Any]) -> np.ndarray | None:
    r = np.asarray(sensor["extrinsic"]["rotation"])
    t = np.asarray(sensor["extrinsic"]["translation"])
    cam = (points_ego - t) @ r  # ego -> camera: Rᵀ (p − t), row-wise
    cam = cam[cam[:, 2] > 0.5]
    if len(cam) < 2:
        return None
    uv = cam[:, :2] / cam[:, 2:3] @ np.asarray(sensor["intrinsic"]["K"])[:2, :2].T
    return uv + np.asarray(sensor["intrinsic"]["K"])[:2, 2]


def make_openlane_dataset(
    root: str | Path,
    *,
    splits: dict[str, int] | None = None,
    frames_per_segment: int = 2,
    image_size: tuple[int, int] = (64, 48),
    subset: str = "subset_A",
    seed: int = 0,
) -> dict[str, Any]:
    """Write the dataset; returns ``root``, ``data_dict`` (the json path), ``tokens``
    (``[(split, segment_id, timestamp)]`` in data-dict order) and ``image_size``.

    ``splits`` maps split names to segment counts (default train 2, val 1); ``image_size``
    is (W, H) of the landscape cameras, the front one being (H, W)."""
    root = Path(root)
    splits = {"train": 2, "val": 1} if splits is None else splits
    rng = np.random.default_rng(seed)
    w, h = image_size
    data_dict: dict[str, dict[str, list[str]]] = {}
    tokens = []
    segment_index = 0
    for split, n_segments in splits.items():
        data_dict[split] = {}
        for _ in range(n_segments):
            seg = f"{10000 + segment_index:05d}"
            segment_index += 1
            world = _world_lanes(rng)
            x0 = rng.uniform(-5.0, 5.0)
            heading0 = rng.uniform(-0.05, 0.05)
            names = []
            for f in range(frames_per_segment):
                ts = str(315967376899927209 + 500_000_000 * (segment_index * 100 + f))
                info = _frame(root, split, seg, ts, world, x0 + STEP * f, heading0 + 0.01 * f, rng, (w, h))
                path = root / split / seg / "info" / f"{ts}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(info))
                names.append(f"{ts}.json")
                tokens.append((split, seg, ts))
            data_dict[split][seg] = names
    dd_path = root / f"data_dict_{subset}.json"
    dd_path.write_text(json.dumps(data_dict))
    return {"root": root, "data_dict": dd_path, "tokens": tokens, "image_size": image_size}


def _frame(root, split, seg, ts, world, x, heading, rng, size) -> dict[str, Any]:
    w, h = size
    rot, trans = _pose(x, heading)
    lanes = [(lane - trans) @ rot for lane in world]  # world -> ego: Rᵀ (p − t)
    sensor = {}
    for name, yaw in CAMERAS:
        cw, ch = (h, w) if name == "ring_front_center" else (w, h)
        sensor[name] = {"image_path": f"{split}/{seg}/image/{name}/{ts}.jpg", **camera_sensor(yaw, cw, ch)}
    annotation = None
    tes = []
    if split != "test":
        n_te = int(rng.integers(1, 4))
        fw, fh = h, w  # the portrait front image
        for i in range(n_te):
            x1 = 2 + i * fw // 3
            y1 = int(rng.integers(2, fh // 3))
            box = [[float(x1), float(y1)], [float(x1 + fw // 4), float(y1 + fh // 6)]]
            attribute = int(rng.integers(0, 13))
            tes.append(
                {
                    "id": str(100 + i),
                    "category": 1 if attribute <= 3 else 2,
                    "attribute": attribute,
                    "points": box,
                }
            )
        lclc = np.zeros((4, 4), dtype=int)
        lclc[0, 1] = lclc[2, 3] = 1
        lcte = np.zeros((4, n_te), dtype=int)
        for i in range(n_te):
            lcte[1 if i % 2 == 0 else 3, i] = 1
        annotation = {
            "lane_centerline": [
                {"id": str(i), "points": lane.tolist(), "is_intersection_or_connector": i % 2 == 1}
                for i, lane in enumerate(lanes)
            ],
            "traffic_element": tes,
            "topology_lclc": lclc.tolist(),
            "topology_lcte": lcte.tolist(),
        }
    for name, _ in CAMERAS:
        cw, ch = (h, w) if name == "ring_front_center" else (w, h)
        img = np.full((ch, cw, 3), 90, dtype=np.uint8)
        for k, lane in enumerate(lanes):
            uv = _project(lane, sensor[name])
            if uv is not None:
                cv2.polylines(
                    img, [np.round(uv).astype(np.int32)], False, (40 * k + 60, 255, 255 - 40 * k), 1
                )
        if name == "ring_front_center":
            for te in tes:
                (x1, y1), (x2, y2) = te["points"]
                colour = (0, 0, 255) if te["attribute"] == 1 else (0, 200, 20 * te["attribute"])
                cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), colour, -1)
        path = root / sensor[name]["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
    info = {
        "version": "v1.0",
        "segment_id": seg,
        "meta_data": {"source": "AV2", "source_id": f"synthetic-{seg}"},
        "timestamp": ts,
        "sensor": sensor,
        "pose": {"rotation": rot.tolist(), "translation": trans.tolist()},
    }
    if annotation is not None:
        info["annotation"] = annotation
    return info
