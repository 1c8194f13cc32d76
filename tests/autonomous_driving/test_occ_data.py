"""NuSceneOcc on generated data in the published layout: the rig sees the grid, items follow
the team contract, the temporal queue and CAN-bus rules, and clear errors."""

from __future__ import annotations

import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS
from mmengine.structures import BaseDataElement
from pyquaternion import Quaternion
from synthetic_occ import CAM_NAMES, FREE, camera_rig, make_occ_dataset

import autonomous_driving.bev_common.transforms  # noqa: F401  (registers)
from autonomous_driving.occupancy_prediction.bevformer_occ.dataset import NuSceneOcc, yaw_degrees

META_KEYS = (
    "lidar2img",
    "ego2lidar",
    "img_shape",
    "can_bus",
    "prev_bev_exists",
    "scene_token",
    "sample_idx",
    "frame_idx",
    "timestamp",
)


def pipeline(root, train: bool) -> list[dict]:
    steps = [dict(type="LoadMultiViewImageFromFiles", to_float32=True)]
    if train:
        steps.append(dict(type="PhotoMetricDistortionMultiViewImage"))
    return steps + [dict(type="LoadOccGTFromFile", data_root=str(root)), dict(type="PackMultiViewInputs")]


def dataset(paths, train=True, **kwargs) -> NuSceneOcc:
    cfg = dict(
        type="NuSceneOcc",
        data_root=str(paths["data_root"]),
        ann_file=str(paths["train_ann" if train else "val_ann"]),
        pipeline=pipeline(paths["data_root"], train),
        bev_size=(20, 20),
        pillar_h=16,
        queue_length=4,
        test_mode=not train,
    )
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def _visible_cells(meta, grid, pc_range, image_size, anchors=8) -> np.ndarray:
    """BEV cells with at least one of the encoder's pillar anchors inside some camera image
    (depth > 1e-5, strictly inside), projected with lidar2img @ ego2lidar as the model does."""
    nx, ny, _ = grid
    pc = np.asarray(pc_range)
    xs = (np.arange(nx) + 0.5) / nx * (pc[3] - pc[0]) + pc[0]
    ys = (np.arange(ny) + 0.5) / ny * (pc[4] - pc[1]) + pc[1]
    zs = np.linspace(0.5, (pc[5] - pc[2]) - 0.5, anchors) + pc[2]
    y, x, z = np.meshgrid(ys, xs, zs, indexing="ij")
    points = np.stack([x, y, z, np.ones_like(x)], -1).reshape(-1, 4)
    seen = np.zeros(len(points), bool)
    for lidar2img in meta["lidar2img"]:
        cam = points @ (lidar2img @ meta["ego2lidar"]).T
        depth = cam[:, 2]
        u = cam[:, 0] / np.maximum(depth, 1e-5) / image_size[0]
        v = cam[:, 1] / np.maximum(depth, 1e-5) / image_size[1]
        seen |= (depth > 1e-5) & (u > 0) & (u < 1) & (v > 0) & (v < 1)
    return seen.reshape(ny, nx, anchors).any(-1)


@pytest.mark.parametrize(
    "pc_range, expected, ring_expected",
    [((-40, -40, -1, 40, 40, 5.4), 0.95, 1.0), ((-4, -4, -1, 4, 4, 5.4), 0.75, 0.9)],
)
def test_the_rig_sees_the_bev_grid(make_occ, pc_range, expected, ring_expected):
    paths = make_occ(scenes=1, frames_per_scene=1, pc_range=pc_range)
    meta = dataset(paths, train=False)[0]["data_samples"].img_metas[0]
    visible = _visible_cells(meta, (20, 20, 16), pc_range, (96, 64))
    assert visible.mean() > expected  # the unseen cells are the ones under and right beside the ego
    ring = np.ones_like(visible)
    ring[2:-2, 2:-2] = False
    # the outer ring is in view (at 4 m a few cells fall in the gaps between neighbouring cameras)
    assert visible[ring].mean() >= ring_expected


def test_lidar2img_chain_matches_the_rig(occ_data):
    """lidar2img @ ego2lidar, derived from the info's sensor2lidar and intrinsics, equals
    K @ ego2cam of the generator's rig."""
    meta = dataset(occ_data, train=False)[0]["data_samples"].img_metas[0]
    point = np.array([12.0, -3.0, 0.7, 1.0])
    for (name, k, cam2ego), lidar2img in zip(camera_rig((96, 64)), meta["lidar2img"], strict=True):
        ours = lidar2img @ meta["ego2lidar"] @ point
        ref = k @ (np.linalg.inv(cam2ego) @ point)[:3]
        np.testing.assert_allclose(ours[:3], ref, atol=1e-9, err_msg=name)
    assert [f.split("/")[-2] for f in meta["filename"]] == list(CAM_NAMES)


def test_labels_have_structure(occ_data):
    gt = dataset(occ_data, train=False)[0]["data_samples"]
    sem = gt.voxel_semantics.numpy()
    assert (sem[:, :, :2] != FREE).all()  # the ground layers (z < 0) are ground classes
    assert set(np.unique(sem[:, :, :2])) <= {11, 12, 13, 14} | {1, 4, 7, 8, 10, 15, 16}
    assert (sem[:, :, -1] == FREE).all()  # nothing reaches the top of the grid
    objects = set(np.unique(sem[:, :, 2:])) - {FREE}
    assert objects >= {15, 16} and objects & {1, 4, 7, 8, 10}  # buildings, vegetation and road users above
    mask = gt.mask_camera.numpy()
    assert 0.3 < mask.mean() < 0.9 and set(np.unique(mask)) == {0, 1}


def test_training_item_follows_the_contract(occ_data):
    random.seed(0)
    item = dataset(occ_data)[4]
    img, sample = item["inputs"]["img"], item["data_samples"]
    assert isinstance(sample, BaseDataElement)
    assert img.shape == (4, 6, 3, 64, 96) and img.dtype == torch.float32
    metas = sample.metainfo["img_metas"]
    assert len(metas) == 4
    for meta in metas:
        assert set(META_KEYS) <= set(meta)
        assert len(meta["lidar2img"]) == 6 and all(
            m.shape == (4, 4) and m.dtype == np.float64 for m in meta["lidar2img"]
        )
        assert meta["ego2lidar"].shape == (4, 4) and meta["img_shape"] == [(64, 96, 3)] * 6
        assert meta["can_bus"].shape == (18,) and meta["can_bus"].dtype == np.float64
    assert [m["timestamp"] for m in metas] == sorted(m["timestamp"] for m in metas)
    for key in ("voxel_semantics", "mask_lidar", "mask_camera"):
        assert sample.get(key).shape == (20, 20, 16) and sample.get(key).dtype == torch.uint8
    # the labels are those of the current (last) frame
    path = occ_data["data_root"] / metas[-1]["occ_gt_path"]
    with np.load(path) as npz:
        np.testing.assert_array_equal(sample.voxel_semantics.numpy(), npz["semantics"])


def test_infos_are_sorted_by_timestamp(occ_data):
    with open(occ_data["train_ann"], "rb") as fh:
        stored = [i["timestamp"] for i in pickle.load(fh)["infos"]]
    assert stored != sorted(stored)  # the generator shuffles, as the converter's order is not by time
    ds = dataset(occ_data)
    assert [ds.get_data_info(i)["timestamp"] for i in range(len(ds))] == sorted(t / 1e6 for t in stored)


def test_queue_takes_three_of_the_four_previous_frames(occ_data):
    ds = dataset(occ_data)
    token_index = {ds.get_data_info(i)["sample_idx"]: i for i in range(len(ds))}
    picked = set()
    for seed in range(12):
        random.seed(seed)
        metas = ds[5]["data_samples"].img_metas
        indices = [token_index[m["sample_idx"]] for m in metas]
        assert indices[-1] == 5 and len(set(indices[:3])) == 3 and set(indices[:3]) < {1, 2, 3, 4}
        assert indices[:3] == sorted(indices[:3])
        picked.add(tuple(indices[:3]))
    assert len(picked) > 1  # random, not a fixed choice
    random.seed(0)
    first = [token_index[m["sample_idx"]] for m in ds[0]["data_samples"].img_metas]
    assert first == [0, 0, 0, 0]  # indices before the first frame are clipped to 0, as published


def _frame(scene, pos, yaw_deg, yaw_rad):
    can_bus = np.zeros(18)
    can_bus[:3], can_bus[-2], can_bus[-1] = pos, yaw_rad, yaw_deg
    meta = {"scene_token": scene, "can_bus": can_bus}
    return {"inputs": {"img": torch.zeros(2, 3, 4, 4)}, "data_samples": BaseDataElement(metainfo=meta)}


def test_union2one_makes_the_can_bus_relative(occ_data):
    frames = [
        _frame("A", [10, 20, 1], 30.0, 0.5),
        _frame("A", [13, 24, 1], 35.0, 0.6),
        _frame("B", [100, 0, 0], 350.0, 6.1),
        _frame("B", [101, 2, 0], 10.0, 0.17),
    ]
    out = dataset(occ_data).union2one(frames)
    metas = out["data_samples"].img_metas
    assert [m["prev_bev_exists"] for m in metas] == [False, True, False, True]
    np.testing.assert_allclose(
        [m["can_bus"][:3] for m in metas], [[0, 0, 0], [3, 4, 0], [0, 0, 0], [1, 2, 0]]
    )
    np.testing.assert_allclose(
        [m["can_bus"][-1] for m in metas], [0, 5, 0, -340]
    )  # degrees, plain difference
    np.testing.assert_allclose(
        [m["can_bus"][-2] for m in metas], [0.5, 0.6, 6.1, 0.17]
    )  # radians stay absolute
    assert out["inputs"]["img"].shape == (4, 2, 3, 4, 4)
    assert frames[1]["data_samples"].can_bus[0] == 13  # the frames' own metas are left untouched


def test_test_mode_gives_one_frame_with_the_absolute_can_bus(occ_data):
    ds = dataset(occ_data, train=False)
    with open(occ_data["val_ann"], "rb") as fh:
        by_token = {i["token"]: i for i in pickle.load(fh)["infos"]}
    for idx in (0, 1, 3):
        item = ds[idx]
        assert item["inputs"]["img"].shape == (1, 6, 3, 64, 96)
        (meta,) = item["data_samples"].img_metas
        info = by_token[meta["sample_idx"]]
        yaw = Quaternion(info["ego2global_rotation"]).yaw_pitch_roll[0]
        deg = np.degrees(yaw) % 360
        np.testing.assert_allclose(meta["can_bus"][:3], info["ego2global_translation"])
        np.testing.assert_allclose(meta["can_bus"][3:7], info["ego2global_rotation"])
        np.testing.assert_allclose(meta["can_bus"][7:16], info["can_bus"][7:16])  # the rest of the CAN pose
        assert meta["can_bus"][-1] == pytest.approx(deg) and meta["can_bus"][-2] == pytest.approx(
            np.radians(deg)
        )
        assert meta["prev_bev_exists"] == (info["frame_idx"] > 0)
        assert meta["timestamp"] == info["timestamp"] / 1e6


def test_yaw_degrees_range():
    assert yaw_degrees(Quaternion(axis=(0, 0, 1), degrees=-90).elements) == pytest.approx(270.0)
    assert yaw_degrees(Quaternion(axis=(0, 0, 1), degrees=45).elements) == pytest.approx(45.0)


def test_published_relative_ann_file_and_a_moved_dataset(make_occ, tmp_path, monkeypatch):
    paths = make_occ(scenes=2, frames_per_scene=1)
    moved = tmp_path / "data" / "occ3d-nus"
    moved.parent.mkdir()
    shutil.move(paths["data_root"], moved)  # the infos still name the old absolute image paths
    shutil.rmtree(tmp_path / "data" / "occ3d-nus" / "gts" / "scene-0002")
    monkeypatch.chdir(tmp_path)
    ds = NuSceneOcc(
        ann_file="data/occ3d-nus/occ_infos_temporal_val.pkl",
        data_root="data/occ3d-nus/",
        pipeline=pipeline("data/occ3d-nus", False)[:1] + [dict(type="PackMultiViewInputs", keys=[])],
        bev_size=(20, 20),
        test_mode=True,
    )
    files = ds[0]["data_samples"].img_metas[0]["filename"]
    assert all(f.startswith("data/occ3d-nus/samples/") for f in files)
    ds_gt = NuSceneOcc(
        ann_file="data/occ3d-nus/occ_infos_temporal_val.pkl",
        data_root="data/occ3d-nus/",
        pipeline=pipeline("data/occ3d-nus", False),
        bev_size=(20, 20),
        test_mode=True,
    )
    with pytest.raises(FileNotFoundError, match="scene-0002"):
        for i in range(len(ds_gt)):
            ds_gt[i]


def test_errors_are_clear(occ_data, make_occ, tmp_path):
    with pytest.raises(FileNotFoundError, match="create_data.py occ"):
        NuSceneOcc(ann_file=str(tmp_path / "missing.pkl"), data_root=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"ann_file /\S+/data/occ3d-nus/occ_infos_temporal_train.pkl not"
    ):
        NuSceneOcc(ann_file="data/occ3d-nus/occ_infos_temporal_train.pkl", data_root="data/occ3d-nus/")
    with pytest.raises(ValueError, match=r"\(bev_w, bev_h, pillar_h\) is \(10, 10, 16\)"):
        dataset(occ_data, train=False, bev_size=(10, 10))[0]
    with pytest.raises(ValueError, match=r"is \(20, 20, 8\)"):
        dataset(occ_data, train=False, pillar_h=8)[0]
    paths = make_occ(scenes=1, frames_per_scene=1)
    with open(paths["val_ann"], "rb") as fh:
        data = pickle.load(fh)
    del data["infos"][0]["lidar2ego_rotation"]
    del data["infos"][0]["cams"]["CAM_BACK"]["cam_intrinsic"]
    with open(paths["val_ann"], "wb") as fh:
        pickle.dump(data, fh)
    with pytest.raises(KeyError, match=r"lidar2ego_rotation.*cams\[CAM_BACK\]\.cam_intrinsic"):
        dataset(paths, train=False)
    with pytest.raises(ValueError, match="must end with PackMultiViewInputs"):
        dataset(occ_data, train=False, pipeline=[dict(type="LoadMultiViewImageFromFiles")])[0]
    with pytest.raises(ValueError, match="queue_length"):
        dataset(occ_data, queue_length=0)


def test_other_camera_counts_and_sizes(make_occ):
    """Fewer cameras, another image size (the published 16:9 aspect), a non-square grid."""
    paths = make_occ(scenes=1, frames_per_scene=2, grid=(10, 12, 8), image_size=(80, 45), num_cams=3)
    item = dataset(paths, bev_size=(12, 10), pillar_h=8, queue_length=2)[1]
    assert item["inputs"]["img"].shape == (2, 3, 3, 45, 80)
    assert item["data_samples"].voxel_semantics.shape == (10, 12, 8)
    assert [f.split("/")[-2] for f in item["data_samples"].img_metas[0]["filename"]] == list(CAM_NAMES[:3])
    with pytest.raises(ValueError, match="num_cams"):
        make_occ_dataset(paths["data_root"], num_cams=7)


def test_published_pipeline_and_preprocessor_normalise_once(make_occ):
    """A published pipeline (NormalizeMultiviewImage + PadMultiViewImage) and ours (both in the
    data preprocessor) give the same batch."""
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate

    import autonomous_driving.bev_common.data_preprocessor  # noqa: F401

    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    paths = make_occ(scenes=1, frames_per_scene=1, image_size=(80, 45))
    load = [
        dict(type="LoadMultiViewImageFromFiles", to_float32=True),
        dict(type="LoadOccGTFromFile", data_root=str(paths["data_root"])),
    ]
    published = load + [
        dict(type="NormalizeMultiviewImage", **norm),
        dict(type="PadMultiViewImage", size_divisor=32),
    ]
    pre = MODELS.build(
        dict(type="MultiViewDataPreprocessor", mean=norm["mean"], std=norm["std"], bgr_to_rgb=True)
    )
    batches = []
    for steps in (published, load):
        ds = dataset(paths, train=False, pipeline=steps + [dict(type="PackMultiViewInputs")])
        batches.append(pre(pseudo_collate([ds[0]])))
    assert batches[0]["inputs"]["img"].shape == (1, 1, 6, 3, 64, 96)
    torch.testing.assert_close(batches[0]["inputs"]["img"], batches[1]["inputs"]["img"], atol=1e-4, rtol=1e-5)
    metas = [b["data_samples"][0].img_metas[0] for b in batches]
    assert metas[0]["pad_shape"] == metas[1]["pad_shape"] == [(64, 96, 3)] * 6
    assert metas[0]["img_shape"] == metas[1]["img_shape"] == [(45, 80, 3)] * 6
