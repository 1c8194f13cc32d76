"""The occ converter on a tiny nuScenes-format database written here (the devkit's JSON tables,
6 cameras, lidar key frames and sweeps, boxes, CAN bus pose files, an Occ3D annotations.json):
the pkl fields and values, and NuSceneOcc reading the result."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
from mmdet.registry import DATASETS
from PIL import Image
from pyquaternion import Quaternion
from synthetic_occ import CAM_NAMES, camera_rig

import autonomous_driving.bev_common.transforms  # noqa: F401  (registers)
from autonomous_driving.occupancy_prediction.bevformer_occ import create_data
from autonomous_driving.occupancy_prediction.bevformer_occ.create_data import can_bus_vector, create_occ_infos
from autonomous_driving.occupancy_prediction.bevformer_occ.dataset import yaw_degrees

pytest.importorskip("nuscenes", reason="nuscenes-devkit (optional) is not installed")

IMAGE_SIZE = (32, 24)
GRID = (20, 20, 16)
T0 = 1533151603_547590


def _tok(kind: str, *ids) -> str:
    return f"{kind}-" + "-".join(str(i) for i in ids)


def _ego_pose(scene: int, t_us: int) -> tuple[list[float], list[float]]:
    """A smooth drive: 5 m/s along a line turning at 4 deg/s."""
    s = (t_us - T0) / 1e6
    yaw = 30.0 * scene + 4.0 * s
    return [400.0 + 100 * scene + 5.0 * s, 1100.0 + 2.0 * s, 0.0], list(
        Quaternion(axis=(0, 0, 1), degrees=yaw).elements
    )


def write_nuscenes_db(
    root, version: str, scenes: list[str], frames: int = 3, annotations: bool = True
) -> dict:
    """Write the tables, files, CAN bus and Occ3D annotations; return what the checks need."""
    tables = {
        k: []
        for k in (
            "category",
            "attribute",
            "visibility",
            "instance",
            "sensor",
            "calibrated_sensor",
            "ego_pose",
            "log",
            "scene",
            "sample",
            "sample_data",
            "sample_annotation",
            "map",
        )
    }
    tables["category"] = [
        {"token": "cat-car", "name": "vehicle.car", "description": ""},
        {"token": "cat-ped", "name": "human.pedestrian.adult", "description": ""},
        {"token": "cat-animal", "name": "animal", "description": ""},
    ]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": ""}]
    channels = [*CAM_NAMES, "LIDAR_TOP"]
    tables["sensor"] = [
        {"token": _tok("sensor", c), "channel": c, "modality": "lidar" if c == "LIDAR_TOP" else "camera"}
        for c in channels
    ]
    rig = {name: (k, cam2ego) for name, k, cam2ego in camera_rig(IMAGE_SIZE)}
    (root / "maps").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "map.png")
    tables["map"] = [
        {"token": "map-0", "log_tokens": [], "category": "semantic_prior", "filename": "maps/map.png"}
    ]
    scene_infos, expect = {}, {"samples": {}, "cams": {}}
    (root / "can_bus").mkdir()
    rng = np.random.default_rng(0)
    for s, name in enumerate(scenes):
        log = _tok("log", s)
        tables["log"].append(
            {
                "token": log,
                "logfile": f"log{s}",
                "vehicle": "n015",
                "date_captured": "2018-08-01",
                "location": "singapore-onenorth",
            }
        )
        tables["map"][0]["log_tokens"].append(log)
        for c in channels:
            if c == "LIDAR_TOP":
                t, q, intr = [0.985, 0.0, 1.84], list(Quaternion(axis=(0, 0, 1), degrees=-90).elements), []
            else:
                k, cam2ego = rig[c]
                t, q, intr = (
                    list(cam2ego[:3, 3]),
                    list(Quaternion(matrix=cam2ego[:3, :3]).elements),
                    k.tolist(),
                )
            tables["calibrated_sensor"].append(
                {
                    "token": _tok("cs", s, c),
                    "sensor_token": _tok("sensor", c),
                    "translation": t,
                    "rotation": q,
                    "camera_intrinsic": intr,
                }
            )
        samples = [_tok("sample", s, f) for f in range(frames)]
        scene_token = _tok("scene", s)
        tables["scene"].append(
            {
                "token": scene_token,
                "log_token": log,
                "nbr_samples": frames,
                "name": name,
                "first_sample_token": samples[0],
                "last_sample_token": samples[-1],
                "description": "",
            }
        )
        scene_infos[name] = {}
        prev_sd = {c: "" for c in channels}
        for f, token in enumerate(samples):
            ts = T0 + s * 100_000_000 + f * 500_000
            tables["sample"].append(
                {
                    "token": token,
                    "timestamp": ts,
                    "scene_token": scene_token,
                    "prev": samples[f - 1] if f else "",
                    "next": samples[f + 1] if f + 1 < frames else "",
                }
            )
            # one lidar sweep (not a key frame) 250 ms before each key frame after the first
            entries = [("LIDAR_TOP", ts - 250_000, False)] if f else []
            entries += [
                (c, ts + (12_000 * i if c != "LIDAR_TOP" else 0), True) for i, c in enumerate(channels)
            ]
            for c, t, key in entries:
                sd = _tok("sd", s, f, c, int(key))
                translation, rotation = _ego_pose(s, t - s * 100_000_000)
                tables["ego_pose"].append(
                    {
                        "token": _tok("ep", sd),
                        "timestamp": t,
                        "translation": translation,
                        "rotation": rotation,
                    }
                )
                folder = "samples" if key else "sweeps"
                ext = "pcd.bin" if c == "LIDAR_TOP" else "jpg"
                filename = f"{folder}/{c}/log{s}__{c}__{t}.{ext}"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                if c == "LIDAR_TOP":
                    rng.normal(0, 10, (20, 5)).astype(np.float32).tofile(root / filename)
                else:
                    Image.fromarray(
                        rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
                    ).save(root / filename)
                tables["sample_data"].append(
                    {
                        "token": sd,
                        "sample_token": token,
                        "ego_pose_token": _tok("ep", sd),
                        "calibrated_sensor_token": _tok("cs", s, c),
                        "timestamp": t,
                        "fileformat": ext.split(".")[-1],
                        "is_key_frame": key,
                        "height": 0 if c == "LIDAR_TOP" else IMAGE_SIZE[1],
                        "width": 0 if c == "LIDAR_TOP" else IMAGE_SIZE[0],
                        "filename": filename,
                        "prev": prev_sd[c],
                        "next": "",
                    }
                )
                if prev_sd[c]:
                    next(r for r in tables["sample_data"] if r["token"] == prev_sd[c])["next"] = sd
                prev_sd[c] = sd
                if key and c != "LIDAR_TOP":
                    expect["cams"][(token, c)] = (t, translation, rotation)
            gt_path = f"gts/{name}/{token}/labels.npz"
            (root / gt_path).parent.mkdir(parents=True)
            sem = rng.integers(0, 18, GRID).astype(np.uint8)
            np.savez_compressed(
                root / gt_path,
                semantics=sem,
                mask_lidar=(sem < 9).astype(np.uint8),
                mask_camera=(sem > 3).astype(np.uint8),
            )
            scene_infos[name][token] = {"timestamp": ts, "gt_path": gt_path, "prev": "", "next": ""}
            expect["samples"][token] = dict(scene=name, frame_idx=f, timestamp=ts, gt_path=gt_path)
        if annotations:  # a car seen in every frame, a pedestrian in the first one
            inst = _tok("inst", s)
            anns = [_tok("ann", s, f) for f in range(frames)]
            tables["instance"].append(
                {
                    "token": inst,
                    "category_token": "cat-car",
                    "nbr_annotations": frames,
                    "first_annotation_token": anns[0],
                    "last_annotation_token": anns[-1],
                }
            )
            for f, ann in enumerate(anns):
                centre = [410.0 + 100 * s + 2.0 * f, 1103.0, 0.9]
                tables["sample_annotation"].append(
                    {
                        "token": ann,
                        "sample_token": samples[f],
                        "instance_token": inst,
                        "visibility_token": "4",
                        "attribute_tokens": [],
                        "translation": centre,
                        "size": [1.9, 4.6, 1.7],
                        "rotation": list(Quaternion(axis=(0, 0, 1), degrees=10).elements),
                        "prev": anns[f - 1] if f else "",
                        "next": anns[f + 1] if f + 1 < frames else "",
                        "num_lidar_pts": 5 * f,
                        "num_radar_pts": 0,
                    }
                )
            tables["instance"].append(
                {
                    "token": _tok("inst-p", s),
                    "category_token": "cat-ped",
                    "nbr_annotations": 1,
                    "first_annotation_token": _tok("ann-p", s),
                    "last_annotation_token": _tok("ann-p", s),
                }
            )
            tables["sample_annotation"].append(
                {
                    "token": _tok("ann-p", s),
                    "sample_token": samples[0],
                    "instance_token": _tok("inst-p", s),
                    "visibility_token": "4",
                    "attribute_tokens": [],
                    "translation": [405.0 + 100 * s, 1098.0, 0.9],
                    "size": [0.6, 0.6, 1.8],
                    "rotation": [1.0, 0, 0, 0],
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": 2,
                    "num_radar_pts": 1,
                }
            )
        if int(name[-4:]) not in (161, 162, 163):  # the devkit's blacklist: those scenes have no CAN bus data
            start = T0 + s * 100_000_000 - 40_000
            poses = []
            for m in range(0, 60):
                t = start + 20_000 * m
                translation, rotation = _ego_pose(s, t - s * 100_000_000)
                poses.append(
                    {
                        "accel": [0.1 * m, 0.2, 9.8],
                        "orientation": rotation,
                        "pos": translation,
                        "rotation_rate": [0.0, 0.01, 0.07],
                        "utime": t,
                        "vel": [5.0, 0.0, float(m)],
                    }
                )
            (root / "can_bus" / f"{name}_pose.json").write_text(json.dumps(poses))
            expect.setdefault("poses", {})[name] = poses
    (root / version).mkdir()
    for table, rows in tables.items():
        (root / version / f"{table}.json").write_text(json.dumps(rows))
    (root / "annotations.json").write_text(
        json.dumps({"train_split": [], "val_split": [], "scene_infos": scene_infos})
    )
    return expect


def test_can_bus_vector_takes_the_last_pose_at_or_before_the_sample():
    poses = [
        {
            "accel": [1, 2, 3],
            "orientation": [1, 0, 0, 0],
            "pos": [float(u), 0, 0],
            "rotation_rate": [4, 5, 6],
            "utime": u,
            "vel": [7, 8, 9],
        }
        for u in (100, 200, 300)
    ]
    np.testing.assert_array_equal(
        can_bus_vector(poses, 250), [200, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0]
    )
    assert (
        can_bus_vector(poses, 300)[0] == 300 and can_bus_vector(poses, 50)[0] == 100
    )  # the first when all are later
    with pytest.raises(ValueError, match="empty"):
        can_bus_vector([], 0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nus")
    # scene-0001 / scene-0161: train (0161 has no CAN bus data), scene-0003: val
    expect = write_nuscenes_db(root, "v1.0-trainval", ["scene-0001", "scene-0003", "scene-0161"])
    out = root / "out"
    paths = create_occ_infos(root, out, "occ", "v1.0-trainval", canbus_root=root, occ_path=root)
    return root, out, paths, expect


def test_converter_writes_the_published_fields_and_values(converted):
    root, out, paths, expect = converted
    assert paths == [out / "occ_infos_temporal_train.pkl", out / "occ_infos_temporal_val.pkl"]
    assert not list(out.glob("*.tmp"))  # written atomically: no temp file left
    with open(paths[0], "rb") as fh:
        train = pickle.load(fh)
    with open(paths[1], "rb") as fh:
        val = pickle.load(fh)
    assert (
        train["metadata"] == {"version": "v1.0-trainval"}
        and len(train["infos"]) == 6
        and len(val["infos"]) == 3
    )
    assert {expect["samples"][i["token"]]["scene"] for i in val["infos"]} == {"scene-0003"}
    for info in train["infos"] + val["infos"]:
        e = expect["samples"][info["token"]]
        assert info["frame_idx"] == e["frame_idx"] and info["timestamp"] == e["timestamp"]
        assert info["occ_gt_path"] == e["gt_path"]
        assert list(info["cams"]) == list(CAM_NAMES)
        assert len(info["sweeps"]) == (
            2 * e["frame_idx"] if e["frame_idx"] else 0
        )  # sweeps + earlier key frames
        if e["scene"] == "scene-0161":
            np.testing.assert_array_equal(info["can_bus"], np.zeros(18))  # blacklisted: zeros, as published
        else:
            poses = expect["poses"][e["scene"]]
            last = [p for p in poses if p["utime"] <= info["timestamp"]][-1]
            np.testing.assert_allclose(info["can_bus"][:3], last["pos"])
            np.testing.assert_allclose(info["can_bus"][3:7], last["orientation"])
            np.testing.assert_allclose(
                info["can_bus"][7:16], last["accel"] + last["rotation_rate"] + last["vel"]
            )
            assert list(info["can_bus"][16:]) == [0.0, 0.0]
        cam = info["cams"]["CAM_BACK"]
        t, translation, rotation = expect["cams"][(info["token"], "CAM_BACK")]
        assert cam["timestamp"] == t and cam["ego2global_translation"] == translation
        assert cam["data_path"] == str(
            root / "samples" / "CAM_BACK" / f"log{int(info['scene_token'][-1])}__CAM_BACK__{t}.jpg"
        )
        assert cam["cam_intrinsic"].shape == (3, 3) and cam["type"] == "CAM_BACK"
        # sensor2lidar: a global point projects to the same camera point through the lidar frame
        point = np.array([420.0, 1104.0, 1.0, 1.0])
        cam2global = _m(translation, rotation) @ _m(cam["sensor2ego_translation"], cam["sensor2ego_rotation"])
        lidar2global = _m(info["ego2global_translation"], info["ego2global_rotation"]) @ _m(
            info["lidar2ego_translation"], info["lidar2ego_rotation"]
        )
        cam2lidar = np.eye(4)
        cam2lidar[:3, :3], cam2lidar[:3, 3] = cam["sensor2lidar_rotation"], cam["sensor2lidar_translation"]
        np.testing.assert_allclose(
            np.linalg.inv(cam2lidar) @ np.linalg.inv(lidar2global) @ point,
            np.linalg.inv(cam2global) @ point,
            atol=1e-9,
        )
    first = next(i for i in train["infos"] if i["token"] == "sample-0-0")
    assert first["prev"] == "" and first["next"] == "sample-0-1"
    assert list(first["gt_names"]) == ["car", "pedestrian"] and first["gt_boxes"].shape == (2, 7)
    assert list(first["valid_flag"]) == [False, True] and list(first["num_radar_pts"]) == [0, 1]
    assert np.isnan(first["gt_velocity"][1]).all()  # a single annotation has no velocity
    speed = np.linalg.norm(first["gt_velocity"][0])
    assert speed == pytest.approx(4.0)  # 2 m per 0.5 s, rotated into the lidar frame


def _m(translation, rotation):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = Quaternion(rotation).rotation_matrix, translation
    return m


def test_nusceneocc_reads_the_converted_infos(converted):
    root, out, paths, _ = converted
    pipeline = [
        dict(type="LoadMultiViewImageFromFiles", to_float32=True),
        dict(type="LoadOccGTFromFile", data_root=str(root)),
        dict(type="PackMultiViewInputs"),
    ]
    ds = DATASETS.build(
        dict(
            type="NuSceneOcc",
            data_root=str(root),
            ann_file=str(paths[0]),
            pipeline=pipeline,
            bev_size=(20, 20),
            queue_length=4,
        )
    )
    item = ds[5]
    assert item["inputs"]["img"].shape == (4, 6, 3, IMAGE_SIZE[1], IMAGE_SIZE[0])
    metas = item["data_samples"].img_metas
    assert [m["timestamp"] for m in metas] == sorted(m["timestamp"] for m in metas)
    meta, before = metas[-1], metas[-2]
    yaws = [yaw_degrees(ds.get_data_info(i)["ego2global_rotation"]) for i in (5, 4)]
    assert yaws[0] == pytest.approx(
        np.degrees(Quaternion(ds.get_data_info(5)["ego2global_rotation"]).yaw_pitch_roll[0]) % 360
    )
    assert meta["can_bus"][-2] == pytest.approx(np.radians(yaws[0]))  # absolute radians
    if before["scene_token"] == meta["scene_token"]:  # relative degrees to the previous queue frame
        prev_yaw = yaw_degrees(before["ego2global_rotation"])
        assert meta["can_bus"][-1] == pytest.approx(yaws[0] - prev_yaw) and meta["prev_bev_exists"]
    with np.load(root / meta["occ_gt_path"]) as npz:
        np.testing.assert_array_equal(item["data_samples"].voxel_semantics.numpy(), npz["semantics"])


def test_test_version_writes_the_test_pkl_without_boxes(tmp_path):
    write_nuscenes_db(tmp_path, "v1.0-test", ["scene-0077"], frames=2, annotations=False)
    annotations = json.loads((tmp_path / "annotations.json").read_text())
    annotations["scene_infos"] = {}  # no labels for the test split
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    (path,) = create_occ_infos(
        tmp_path, tmp_path, "occ", "v1.0-test", canbus_root=tmp_path, occ_path=tmp_path
    )
    assert path.name == "occ_infos_temporal_test.pkl"
    with open(path, "rb") as fh:
        infos = pickle.load(fh)["infos"]
    assert len(infos) == 2 and all(i["occ_gt_path"] is None and "gt_boxes" not in i for i in infos)


def test_converter_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        create_occ_infos(tmp_path, tmp_path, version="v1.0-mini", canbus_root=tmp_path, occ_path=tmp_path)
    with pytest.raises(ValueError, match="version must be"):
        create_occ_infos(tmp_path, tmp_path, version="v2.0", canbus_root=tmp_path, occ_path=tmp_path)
    write_nuscenes_db(tmp_path, "v1.0-mini", ["scene-0061"], frames=1)
    scene_infos = {"scene-0061": {}}
    (tmp_path / "annotations.json").write_text(json.dumps({"scene_infos": scene_infos}))
    with pytest.raises(KeyError, match="sample-0-0 of scene-0061 is not in annotations.json"):
        create_occ_infos(tmp_path, tmp_path, version="v1.0-mini", canbus_root=tmp_path, occ_path=tmp_path)
    for name in [m for m in sys.modules if m == "nuscenes" or m.startswith("nuscenes.")] + ["nuscenes"]:
        monkeypatch.setitem(sys.modules, name, None)  # the optional devkit absent
    with pytest.raises(ImportError, match=r"pip install --no-deps nuscenes-devkit==1\.2\.0"):
        create_data._devkit()
