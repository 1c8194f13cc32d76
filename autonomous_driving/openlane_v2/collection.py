"""The published OpenLane-V2 files, read unchanged, and the collection pickles
(driving_openlane.md §3.3).

On disk: ``<root>/<split>/<segment_id>/info/<timestamp>.json`` (one frame) and
``<root>/data_dict_<subset>.json`` = ``{split: {segment_id: ["<timestamp>.json", …]}}``.
``preprocess`` turns each data dict into ``data_dict_<subset>_<split>.pkl`` =
``{(split, segment_id, timestamp): frame}`` in data-dict order, the frame being the info
json with pose / sensor arrays as float64, lane points float32 subsampled by
``point_interval`` (1 for train, 20 for val and test), traffic-element points float32
``(2, 2)`` and the topology matrices int8.

Run ``python -m autonomous_driving.openlane_v2.collection --root data/OpenLane-V2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_pickle_dump, safe_pickle_load

CAMERAS = (
    "ring_front_center",
    "ring_front_left",
    "ring_front_right",
    "ring_rear_left",
    "ring_rear_right",
    "ring_side_left",
    "ring_side_right",
)
POINT_INTERVAL = {"train": 1, "val": 20, "test": 20}
Token = tuple[str, str, str]


def read_data_dict(path: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """``data_dict_<subset>.json``, checked to be ``{split: {segment_id: [info file names]}}``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{split: {{segment_id: [...]}}}}, got {type(data).__name__}")
    for split, segments in data.items():
        if not isinstance(segments, dict):
            raise ValueError(f"{path}: [{split!r}] must map segment ids to lists of info files")
        for seg, names in segments.items():
            if not isinstance(names, list) or not all(
                isinstance(n, str) and n.endswith(".json") for n in names
            ):
                raise ValueError(f"{path}: [{split!r}][{seg!r}] must be a list of '<timestamp>.json' names")
    return data


def info_path(root: str | os.PathLike, split: str, segment_id: str, name: str) -> Path:
    """Where one frame's info json lives."""
    return Path(root) / split / segment_id / "info" / name


def _array(value: Any, dtype, shape: tuple | None, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {arr.shape}")
    return arr


def convert_frame(info: Mapping[str, Any], point_interval: int, where: str = "frame") -> dict[str, Any]:
    """One info json as the collection stores it (every other field kept as read)."""
    if point_interval < 1:
        raise ValueError(f"point_interval must be >= 1, got {point_interval}")
    frame = copy.deepcopy(dict(info))
    for key in ("segment_id", "timestamp", "sensor", "pose"):
        if key not in frame:
            raise ValueError(f"{where}: missing '{key}'")
    for cam, s in frame["sensor"].items():
        w = f"{where} sensor[{cam!r}]"
        s["extrinsic"]["rotation"] = _array(s["extrinsic"]["rotation"], np.float64, (3, 3), f"{w} rotation")
        s["extrinsic"]["translation"] = _array(
            s["extrinsic"]["translation"], np.float64, (3,), f"{w} translation"
        )
        s["intrinsic"]["K"] = _array(s["intrinsic"]["K"], np.float64, (3, 3), f"{w} K")
        if "distortion" in s["intrinsic"]:
            s["intrinsic"]["distortion"] = _array(
                s["intrinsic"]["distortion"], np.float64, None, f"{w} distortion"
            )
    frame["pose"]["rotation"] = _array(
        frame["pose"]["rotation"], np.float64, (3, 3), f"{where} pose rotation"
    )
    frame["pose"]["translation"] = _array(
        frame["pose"]["translation"], np.float64, (3,), f"{where} pose translation"
    )
    ann = frame.get("annotation")
    if ann is None:  # the test split ships without annotation
        return frame
    lanes, tes = ann["lane_centerline"], ann["traffic_element"]
    for i, lane in enumerate(lanes):
        pts = _array(lane["points"], np.float32, None, f"{where} lane_centerline[{i}]")
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"{where} lane_centerline[{i}]: expected (n, 3) points, got {pts.shape}")
        # Plain stride, as published: 201 points at interval 20 keep 11, end points included.
        lane["points"] = pts[::point_interval]
    for i, te in enumerate(tes):
        te["points"] = _array(te["points"], np.float32, (2, 2), f"{where} traffic_element[{i}]")
    n, k = len(lanes), len(tes)
    for key, shape in (("topology_lclc", (n, n)), ("topology_lcte", (n, k))):
        arr = np.asarray(ann[key], dtype=np.int8)
        if arr.size == 0:
            arr = arr.reshape(shape)
        if arr.shape != shape:
            raise ValueError(f"{where} {key}: expected shape {shape}, got {arr.shape}")
        ann[key] = arr
    return frame


def collect(
    root: str | os.PathLike,
    data_dict: Mapping[str, Mapping[str, Sequence[str]]],
    split: str,
    point_interval: int,
    progress: bool = True,
) -> dict[Token, dict[str, Any]]:
    """``{(split, segment_id, timestamp): frame}`` for one split, in data-dict order."""
    if split not in data_dict:
        raise ValueError(f"split {split!r} is not in the data dict (it has {sorted(data_dict)})")
    jobs = [(seg, name) for seg, names in data_dict[split].items() for name in names]
    if progress:
        from mmengine.utils import track_iter_progress

        jobs_iter = track_iter_progress(jobs)
    else:
        jobs_iter = jobs
    out: dict[Token, dict[str, Any]] = {}
    for seg, name in jobs_iter:
        path = info_path(root, split, seg, name)
        if not path.is_file():
            raise FileNotFoundError(f"data dict lists {split}/{seg}/{name}, but {path} does not exist")
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        timestamp = name[: -len(".json")]
        if str(info.get("timestamp")) != timestamp or str(info.get("segment_id")) != seg:
            raise ValueError(
                f"{path}: holds segment {info.get('segment_id')!r} / timestamp {info.get('timestamp')!r}, "
                f"but its place on disk says {seg!r} / {timestamp!r}"
            )
        out[(split, seg, timestamp)] = convert_frame(info, point_interval, str(path))
    return out


def collection_name(data_dict_path: str | os.PathLike, split: str) -> str:
    """``data_dict_subset_A.json`` + ``train`` -> ``data_dict_subset_A_train``."""
    return f"{Path(data_dict_path).stem}_{split}"


def preprocess(
    root: str | os.PathLike,
    data_dicts: Sequence[str | os.PathLike] | None = None,
    out_dir: str | os.PathLike | None = None,
    point_interval: Mapping[str, int] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``data_dict_<subset>_<split>.pkl`` for every split of every data dict
    (default: all ``data_dict_*.json`` in ``root``), each atomically. Returns the paths."""
    root = Path(root)
    paths = [Path(p) for p in data_dicts] if data_dicts is not None else sorted(root.glob("data_dict_*.json"))
    if not paths:
        raise FileNotFoundError(f"no data_dict_*.json in {root}")
    intervals = dict(POINT_INTERVAL, **(point_interval or {}))
    out_dir = Path(out_dir) if out_dir is not None else root
    written = []
    for dd_path in paths:
        data_dict = read_data_dict(dd_path)
        for split in data_dict:
            if split not in intervals:
                raise ValueError(
                    f"{dd_path}: no point_interval for split {split!r}; give one in point_interval"
                )
            if progress:
                print(
                    f"{dd_path.name} [{split}]: {sum(map(len, data_dict[split].values()))} frames", flush=True
                )
            frames = collect(root, data_dict, split, intervals[split], progress)
            target = out_dir / f"{collection_name(dd_path, split)}.pkl"
            atomic_pickle_dump(frames, target)
            written.append(target)
    return written


def load_collection(path: str | os.PathLike) -> dict[Token, dict[str, Any]]:
    """Read a collection pickle (plain data only)."""
    data = safe_pickle_load(path)
    if not isinstance(data, dict) or not all(isinstance(k, tuple) and len(k) == 3 for k in data):
        raise ValueError(f"{path}: expected {{(split, segment_id, timestamp): frame}}")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenLane-V2 data dicts -> data_dict_<subset>_<split>.pkl")
    parser.add_argument(
        "--root", default="OpenLane-V2", help="folder holding data_dict_*.json and the splits"
    )
    parser.add_argument(
        "--data-dict", nargs="*", help="data dict files (default: all data_dict_*.json in root)"
    )
    parser.add_argument("--out-dir", help="where the pickles go (default: root)")
    args = parser.parse_args(argv)
    for path in preprocess(args.root, args.data_dict, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
