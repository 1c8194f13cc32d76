"""The ``occ`` converter: raw nuScenes + CAN bus + Occ3D ``annotations.json`` →
``{extra_tag}_infos_temporal_{train,val}.pkl`` (``_test`` for v1.0-test), the published info
format ``NuSceneOcc`` reads (driving_occupancy.md §1.3).

nuscenes-devkit is optional (installed ``--no-deps``) and imported only here, when the
converter runs.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

CAMERA_TYPES = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
# nuScenes category -> detection class name, as the published infos store gt_names
NAME_MAPPING = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}
DEVKIT_HINT = "pip install --no-deps nuscenes-devkit==1.2.0"


def _devkit():
    try:
        from nuscenes.can_bus.can_bus_api import NuScenesCanBus
        from nuscenes.nuscenes import NuScenes
        from nuscenes.utils import splits
    except ImportError as err:
        raise ImportError(f"the occ converter needs nuscenes-devkit (optional): {DEVKIT_HINT}") from err
    return NuScenes, NuScenesCanBus, splits


def _split_scene_names(splits, version: str) -> tuple[list[str], list[str]]:
    if version == "v1.0-trainval":
        return list(splits.train), list(splits.val)
    if version == "v1.0-test":
        return list(splits.test), []
    if version == "v1.0-mini":
        return list(splits.mini_train), list(splits.mini_val)
    raise ValueError(f"version must be v1.0-trainval, v1.0-test or v1.0-mini, got {version!r}")


def _pose(translation, rotation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Quaternion(rotation).rotation_matrix
    m[:3, 3] = translation
    return m


def _relative_to_cwd(path: str) -> str:
    """As published: a path under the working directory is stored relative to it."""
    cwd = os.getcwd() + os.sep
    return path[len(cwd) :] if path.startswith(cwd) else path


def _sensor_info(nusc, token: str, lidar2ego: np.ndarray, ego2global: np.ndarray, sensor_type: str) -> dict:
    """A camera / sweep entry: its poses and its pose in the key frame's lidar frame."""
    sd = nusc.get("sample_data", token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    # sensor -> its ego pose -> global -> the key frame's ego -> lidar
    sensor2lidar = (
        np.linalg.inv(lidar2ego)
        @ np.linalg.inv(ego2global)
        @ _pose(pose["translation"], pose["rotation"])
        @ _pose(cs["translation"], cs["rotation"])
    )
    return dict(
        data_path=_relative_to_cwd(str(nusc.get_sample_data_path(token))),
        type=sensor_type,
        sample_data_token=sd["token"],
        sensor2ego_translation=cs["translation"],
        sensor2ego_rotation=cs["rotation"],
        ego2global_translation=pose["translation"],
        ego2global_rotation=pose["rotation"],
        timestamp=sd["timestamp"],
        sensor2lidar_rotation=sensor2lidar[:3, :3],
        sensor2lidar_translation=sensor2lidar[:3, 3],
    )


def can_bus_vector(poses: list[dict], timestamp: int) -> np.ndarray:
    """18 values from the last CAN ``pose`` message at or before ``timestamp`` (the first one
    when all are later): pos (3), orientation (4), the other pose fields in message order
    (accel, rotation_rate, vel: 9), then 0, 0 (the dataset fills in the yaw there)."""
    if not poses:
        raise ValueError("the CAN bus pose message list is empty")
    last = poses[0]
    for pose in poses:
        if pose["utime"] > timestamp:
            break
        last = pose
    rest = [v for key, value in last.items() if key not in ("utime", "pos", "orientation") for v in value]
    values = np.array([*last["pos"], *last["orientation"], *rest, 0.0, 0.0], dtype=np.float64)
    if values.shape != (18,):
        raise ValueError(f"a CAN bus pose message must give 16 values besides utime, got {sorted(last)}")
    return values


def _load_occ_annotations(occ_path) -> dict:
    path = Path(occ_path) / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"Occ3D annotations {path} not found (--occ-path is the folder holding it)")
    with open(path) as fh:
        data = json.load(fh)
    if "scene_infos" not in data:
        raise KeyError(f"{path} has no 'scene_infos' (keys: {sorted(data)[:10]})")
    return data["scene_infos"]


def _boxes(nusc, sample: dict, boxes: list, lidar2ego: np.ndarray, ego2global: np.ndarray) -> dict:
    """The published box fields in the lidar frame (unused by the occupancy loss)."""
    anns = [nusc.get("sample_annotation", token) for token in sample["anns"]]
    locs = np.array([b.center for b in boxes]).reshape(-1, 3)
    dims = np.array([b.wlh for b in boxes]).reshape(-1, 3)
    rots = np.array([b.orientation.yaw_pitch_roll[0] for b in boxes]).reshape(-1, 1)
    # global velocity rotated into the lidar frame
    to_lidar = np.linalg.inv(lidar2ego[:3, :3]) @ np.linalg.inv(ego2global[:3, :3])
    velocity = np.array([(to_lidar @ np.array([*nusc.box_velocity(t)[:2], 0.0]))[:2] for t in sample["anns"]])
    names = np.array([NAME_MAPPING.get(b.name, b.name) for b in boxes])
    return dict(
        gt_boxes=np.concatenate([locs, dims, -rots - np.pi / 2], axis=1),
        gt_names=names,
        gt_velocity=velocity.reshape(-1, 2),
        num_lidar_pts=np.array([a["num_lidar_pts"] for a in anns]),
        num_radar_pts=np.array([a["num_radar_pts"] for a in anns]),
        valid_flag=np.array([a["num_lidar_pts"] + a["num_radar_pts"] > 0 for a in anns], dtype=bool),
    )


def _frame_indices(nusc) -> dict[str, int]:
    """Position of every sample within its scene (following the ``next`` chain)."""
    out = {}
    for scene in nusc.scene:
        token, k = scene["first_sample_token"], 0
        while token:
            out[token] = k
            token, k = nusc.get("sample", token)["next"], k + 1
    return out


def _dump_atomic(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def create_occ_infos(
    root_path,
    out_dir,
    extra_tag: str = "occ",
    version: str = "v1.0-trainval",
    canbus_root="./data",
    occ_path=None,
    max_sweeps: int = 10,
) -> list[Path]:
    """Write the temporal info pkls; return their paths (train, val; or test).

    Args (the published ``create_data.py occ`` flags):
        root_path: the nuScenes root (``<root>/<version>/*.json``, ``samples/``, ``sweeps/``).
        out_dir: where the pkls go.
        extra_tag: file prefix (``occ`` → ``occ_infos_temporal_train.pkl``).
        version: v1.0-trainval, v1.0-test or v1.0-mini.
        canbus_root: the folder holding ``can_bus/`` (``--canbus``).
        occ_path: the folder holding Occ3D's ``annotations.json`` (defaults to root_path).
        max_sweeps: lidar sweeps listed per key frame.
    """
    from tqdm import tqdm

    NuScenes, NuScenesCanBus, splits = _devkit()
    train_names, val_names = _split_scene_names(splits, version)
    scene_infos = _load_occ_annotations(occ_path if occ_path is not None else root_path)
    if not (Path(root_path) / version).is_dir():
        raise FileNotFoundError(
            f"nuScenes tables {Path(root_path) / version} not found (--root-path, --version)"
        )
    nusc = NuScenes(version=version, dataroot=str(root_path), verbose=False)
    can_bus = NuScenesCanBus(dataroot=str(canbus_root))
    by_name = {scene["name"]: scene["token"] for scene in nusc.scene}
    train_scenes = {by_name[n] for n in train_names if n in by_name}
    val_scenes = {by_name[n] for n in val_names if n in by_name}
    test = version == "v1.0-test"
    frame_idx = _frame_indices(nusc)
    poses_cache: dict[str, list[dict] | None] = {}
    train_infos, val_infos = [], []
    for sample in tqdm(nusc.sample, desc=f"occ infos ({version})"):
        if sample["scene_token"] not in train_scenes | val_scenes:
            continue
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        lidar_token = sample["data"]["LIDAR_TOP"]
        sd = nusc.get("sample_data", lidar_token)
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        lidar_path, boxes, _ = nusc.get_sample_data(lidar_token)
        lidar2ego, ego2global = (
            _pose(cs["translation"], cs["rotation"]),
            _pose(pose["translation"], pose["rotation"]),
        )

        if scene_name not in poses_cache:
            if int(scene_name[-4:]) in can_bus.can_blacklist:
                poses_cache[scene_name] = None  # scenes without CAN bus data get zeros, as published
            else:
                try:
                    poses_cache[scene_name] = can_bus.get_messages(scene_name, "pose", print_warnings=False)
                except FileNotFoundError as err:
                    raise FileNotFoundError(
                        f"CAN bus pose messages of {scene_name} not found in {can_bus.can_dir} (--canbus)"
                    ) from err
        poses = poses_cache[scene_name]
        scene_occ = scene_infos.get(scene_name, {})
        if sample["token"] in scene_occ:
            occ_gt_path = scene_occ[sample["token"]]["gt_path"]
        elif test:
            occ_gt_path = None  # the test split has no labels
        else:
            raise KeyError(
                f"sample {sample['token']} of {scene_name} is not in annotations.json's scene_infos"
            )
        info = dict(
            lidar_path=str(lidar_path),  # as published: not made cwd-relative
            token=sample["token"],
            prev=sample["prev"],
            next=sample["next"],
            can_bus=np.zeros(18) if poses is None else can_bus_vector(poses, sample["timestamp"]),
            frame_idx=frame_idx[sample["token"]],
            sweeps=[],
            cams={},
            scene_token=sample["scene_token"],
            lidar2ego_translation=cs["translation"],
            lidar2ego_rotation=cs["rotation"],
            ego2global_translation=pose["translation"],
            ego2global_rotation=pose["rotation"],
            timestamp=sample["timestamp"],
            occ_gt_path=occ_gt_path,
        )
        for cam in CAMERA_TYPES:
            token = sample["data"][cam]
            cam_info = _sensor_info(nusc, token, lidar2ego, ego2global, cam)
            calib = nusc.get("calibrated_sensor", nusc.get("sample_data", token)["calibrated_sensor_token"])
            cam_info["cam_intrinsic"] = np.array(calib["camera_intrinsic"])
            info["cams"][cam] = cam_info
        prev = sd["prev"]
        while prev and len(info["sweeps"]) < max_sweeps:
            info["sweeps"].append(_sensor_info(nusc, prev, lidar2ego, ego2global, "lidar"))
            prev = nusc.get("sample_data", prev)["prev"]
        if not test:
            info.update(_boxes(nusc, sample, boxes, lidar2ego, ego2global))
        (train_infos if sample["scene_token"] in train_scenes else val_infos).append(info)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"version": version}
    if test:
        print(f"test sample: {len(train_infos)}")
        jobs = [("test", train_infos)]
    else:
        print(f"train sample: {len(train_infos)}, val sample: {len(val_infos)}")
        jobs = [("train", train_infos), ("val", val_infos)]
    paths = []
    for split, infos in jobs:
        path = out / f"{extra_tag}_infos_temporal_{split}.pkl"
        _dump_atomic({"infos": infos, "metadata": metadata}, path)
        paths.append(path)
    return paths
