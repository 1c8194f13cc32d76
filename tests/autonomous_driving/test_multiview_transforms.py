"""bev_common multi-view transforms and MultiViewDataPreprocessor: published names and
arguments, arithmetic on hand-made images, and the real Occ3D frame through LoadOccGTFromFile."""

from __future__ import annotations

import mmcv
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS, TRANSFORMS
from mmengine.structures import BaseDataElement
from synthetic_occ import SHARED_DATA

import autonomous_driving.bev_common.data_preprocessor  # noqa: F401  (registers)
import autonomous_driving.bev_common.transforms  # noqa: F401

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
SAMPLE_LABELS = SHARED_DATA / "occ3d_sample_labels.npz"


def build(type_: str, **kwargs):
    return TRANSFORMS.build(dict(type=type_, **kwargs))


def _images(n=2, h=50, w=70, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (h, w, 3)).astype(np.float32) for _ in range(n)]


def test_load_reads_every_camera_as_bgr_float32(tmp_path):
    paths = []
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):  # RGB red, blue
        path = tmp_path / f"cam{k}.png"
        mmcv.imwrite(np.full((20, 30, 3), colour[::-1], np.uint8), str(path))  # imwrite takes BGR
        paths.append(str(path))
    out = build("LoadMultiViewImageFromFiles", to_float32=True).transform({"img_filename": paths})
    assert [img.dtype for img in out["img"]] == [np.float32, np.float32]
    assert out["img_shape"] == [(20, 30, 3), (20, 30, 3)] and out["filename"] == paths
    np.testing.assert_array_equal(out["img"][0][0, 0], [0, 0, 255])  # BGR order: red is channel 2
    np.testing.assert_array_equal(out["img"][1][0, 0], [255, 0, 0])
    raw = build("LoadMultiViewImageFromFiles").transform({"img_filename": paths})
    assert raw["img"][0].dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        build("LoadMultiViewImageFromFiles").transform({"img_filename": [str(tmp_path / "nope.jpg")]})


def test_normalize_matches_the_formula_and_records_the_config():
    imgs = _images()
    out = build("NormalizeMultiviewImage", mean=MEAN, std=STD, to_rgb=True).transform(
        {"img": [i.copy() for i in imgs]}
    )
    expected = (imgs[1][..., ::-1] - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out["img"][1], expected, rtol=1e-5, atol=1e-5)
    assert out["img_norm_cfg"]["to_rgb"] is True
    np.testing.assert_allclose(out["img_norm_cfg"]["mean"], MEAN)
    with pytest.raises(ValueError, match="3 values"):
        build("NormalizeMultiviewImage", mean=[1, 2], std=STD)


def test_pad_to_divisor_keeps_img_shape_and_sets_pad_shape():
    imgs = _images(h=50, w=70)
    out = build("PadMultiViewImage", size_divisor=32).transform({"img": imgs, "img_shape": [(50, 70, 3)] * 2})
    assert out["pad_shape"] == [(64, 96, 3)] * 2 and out["img_shape"] == [(50, 70, 3)] * 2
    np.testing.assert_array_equal(out["img"][0][:50, :70], imgs[0])
    assert not out["img"][0][50:].any() and not out["img"][0][:, 70:].any()
    fixed = build("PadMultiViewImage", size=(60, 80)).transform({"img": _images(h=50, w=70)})
    assert fixed["pad_shape"] == [(60, 80, 3)] * 2
    with pytest.raises(ValueError, match="exactly one"):
        build("PadMultiViewImage")


def test_photometric_distortion_needs_float32_and_changes_cameras_independently():
    np.random.seed(3)
    imgs = _images(n=6)
    out = build("PhotoMetricDistortionMultiViewImage").transform({"img": [i.copy() for i in imgs]})
    assert [o.shape for o in out["img"]] == [i.shape for i in imgs]
    changed = [not np.allclose(o, i) for o, i in zip(out["img"], imgs)]
    assert any(changed)
    deltas = {round(float((o - i).mean()), 3) for o, i in zip(out["img"], imgs)}
    assert len(deltas) > 1  # per-camera random draws, not one shared change
    with pytest.raises(TypeError, match="to_float32=True"):
        build("PhotoMetricDistortionMultiViewImage").transform({"img": [np.zeros((4, 4, 3), np.uint8)]})


def test_random_scale_updates_lidar2img_so_a_point_lands_on_the_scaled_pixel():
    k = np.array([[60.0, 0, 48.0, 0], [0, 55.0, 30.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]  # lidar x forward -> camera z
    lidar2img = k @ lidar2cam
    point = np.array([10.0, -2.0, 1.0, 1.0])  # lidar frame
    uvw = lidar2img @ point
    u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]
    img = np.zeros((64, 96, 3), np.float32)
    img[int(v) - 2 : int(v) + 3, int(u) - 2 : int(u) + 3] = 255.0  # a bright square on the point
    results = {"img": [img], "lidar2img": [lidar2img], "cam_intrinsic": [k], "img_shape": [img.shape]}
    out = build("RandomScaleImageMultiViewImage", scales=[0.5]).transform(results)
    assert out["img"][0].shape == (32, 48, 3) and out["img_shape"] == [(32, 48, 3)]
    uvw2 = out["lidar2img"][0] @ point
    u2, v2 = uvw2[0] / uvw2[2], uvw2[1] / uvw2[2]
    assert (u2, v2) == pytest.approx((u * 0.5, v * 0.5))
    ys, xs = np.nonzero(out["img"][0][..., 0] > 100)
    assert abs(xs.mean() + 0.5 - u2) < 1.0 and abs(ys.mean() + 0.5 - v2) < 1.0  # the pixel holding it
    np.testing.assert_allclose(out["cam_intrinsic"][0][:2, :3], k[:2, :3] * 0.5)
    with pytest.raises(ValueError, match="positive"):
        build("RandomScaleImageMultiViewImage", scales=[0.0])


def test_the_real_occ3d_frame_loads_through_LoadOccGTFromFile():
    assert SAMPLE_LABELS.is_file(), f"{SAMPLE_LABELS} not found: ../shared/data must sit beside the repo"
    out = build("LoadOccGTFromFile", data_root=str(SAMPLE_LABELS.parent)).transform(
        {"occ_gt_path": SAMPLE_LABELS.name}
    )
    with np.load(SAMPLE_LABELS) as npz:
        for ours, theirs in (
            ("voxel_semantics", "semantics"),
            ("mask_lidar", "mask_lidar"),
            ("mask_camera", "mask_camera"),
        ):
            assert out[ours].shape == (200, 200, 16) and out[ours].dtype == np.uint8
            np.testing.assert_array_equal(out[ours], npz[theirs])
    assert out["voxel_semantics"].max() == 17 and set(np.unique(out["mask_camera"])) == {0, 1}


def test_occ_gt_errors_name_the_file(tmp_path):
    load = build("LoadOccGTFromFile", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="gts/x/labels.npz"):
        load.transform({"occ_gt_path": "gts/x/labels.npz", "sample_idx": "tok"})
    with pytest.raises(ValueError, match="no occupancy labels"):
        load.transform({"occ_gt_path": None, "sample_idx": "tok"})
    z = np.zeros((4, 4, 2), np.uint8)
    np.savez_compressed(
        tmp_path / "bad.npz", semantics=z, mask_lidar=z, mask_camera=np.zeros((4, 4, 3), np.uint8)
    )
    with pytest.raises(ValueError, match="share one"):
        load.transform({"occ_gt_path": "bad.npz"})
    np.savez_compressed(tmp_path / "lacks.npz", semantics=z)
    with pytest.raises(KeyError, match="mask_camera"):
        load.transform({"occ_gt_path": "lacks.npz"})
    np.savez_compressed(tmp_path / "label.npz", semantics=z + 18, mask_lidar=z, mask_camera=z)
    with pytest.raises(ValueError, match="0..17"):
        load.transform({"occ_gt_path": "label.npz"})


def test_pack_builds_the_contract_item():
    imgs = [np.full((8, 12, 3), k, np.float32) for k in range(3)]
    results = {
        "img": imgs,
        "img_shape": [(8, 12, 3)] * 3,
        "can_bus": np.arange(18.0),
        "scene_token": "s",
        "voxel_semantics": np.ones((4, 4, 2), np.uint8),
        "mask_lidar": np.ones((4, 4, 2), np.uint8),
        "mask_camera": np.zeros((4, 4, 2), np.uint8),
        "unlisted": 1,
    }
    item = build("PackMultiViewInputs").transform(results)
    assert item["inputs"]["img"].shape == (3, 3, 8, 12) and item["inputs"]["img"][2].eq(2).all()
    sample = item["data_samples"]
    assert sample.voxel_semantics.dtype == torch.uint8 and sample.voxel_semantics.shape == (4, 4, 2)
    assert sample.metainfo["scene_token"] == "s" and "unlisted" not in sample.metainfo
    with pytest.raises(KeyError, match="voxel_semantics"):
        build("PackMultiViewInputs").transform({"img": imgs})
    with pytest.raises(ValueError, match="share a size"):
        build("PackMultiViewInputs", keys=[]).transform({"img": [imgs[0], np.zeros((9, 12, 3), np.float32)]})


def _sample(q=2, n=3, h=50, w=70, normalised=None):
    metas = [{"img_shape": [(h, w, 3)] * n} for _ in range(q)]
    if normalised is not None:
        for m in metas:
            m["img_norm_cfg"] = normalised
    return BaseDataElement(metainfo={"img_metas": metas})


def test_preprocessor_normalises_pads_stacks_and_writes_pad_shape():
    pre = MODELS.build(dict(type="MultiViewDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True))
    imgs = [torch.randint(0, 256, (2, 3, 3, 50, 70), dtype=torch.uint8) for _ in range(2)]
    out = pre({"inputs": {"img": imgs}, "data_samples": [_sample(), _sample()]})
    batch = out["inputs"]["img"]
    assert batch.shape == (2, 2, 3, 3, 64, 96) and batch.dtype == torch.float32
    expected = (imgs[1].float()[:, :, [2, 1, 0]] - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(
        3, 1, 1
    )
    torch.testing.assert_close(batch[1, :, :, :, :50, :70], expected)
    assert batch[:, :, :, :, 50:].eq(0).all() and batch[..., 70:].eq(0).all()
    for sample in out["data_samples"]:
        assert [m["pad_shape"] for m in sample.img_metas] == [[(64, 96, 3)] * 3] * 2


def test_preprocessor_does_not_normalise_twice_and_refuses_a_contradicting_config():
    cfg = dict(mean=np.array(MEAN, np.float32), std=np.array(STD, np.float32), to_rgb=True)
    pre = MODELS.build(dict(type="MultiViewDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True))
    already = torch.randn(1, 2, 3, 64, 96)
    out = pre({"inputs": {"img": [already]}, "data_samples": [_sample(q=1, n=2, h=64, w=96, normalised=cfg)]})
    torch.testing.assert_close(out["inputs"]["img"][0], already)
    other = MODELS.build(dict(type="MultiViewDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1]))
    with pytest.raises(ValueError, match="normalise once"):
        other({"inputs": {"img": [already]}, "data_samples": [_sample(q=1, n=2, h=64, w=96, normalised=cfg)]})
    with pytest.raises(ValueError, match=r"\(Q, N, 3, H, W\)"):
        pre({"inputs": {"img": [torch.zeros(2, 3, 8, 8)]}, "data_samples": [_sample()]})


def test_raw_padding_from_the_pipeline_is_zero_after_normalisation():
    """PadMultiViewImage before the preprocessor's normalisation: the pad stays pad_value (0),
    as when the published pipeline normalises first and pads after."""
    pre = MODELS.build(dict(type="MultiViewDataPreprocessor", mean=MEAN, std=STD))
    img = torch.zeros(1, 1, 3, 64, 96)
    img[..., :50, :70] = 200.0
    out = pre({"inputs": {"img": [img]}, "data_samples": [_sample(q=1, n=1)]})["inputs"]["img"]
    assert out[..., 50:, :].eq(0).all() and out[..., 70:].eq(0).all()
    torch.testing.assert_close(out[0, 0, 0, :, 0, 0], (200.0 - torch.tensor(MEAN)) / torch.tensor(STD))


def test_published_pipeline_names_parse():
    for cfg in (
        dict(type="LoadMultiViewImageFromFiles", to_float32=True),
        dict(type="PhotoMetricDistortionMultiViewImage"),
        dict(type="LoadOccGTFromFile", data_root="data/occ3d-nus"),
        dict(type="NormalizeMultiviewImage", mean=MEAN, std=STD, to_rgb=True),
        dict(type="PadMultiViewImage", size_divisor=32),
        dict(type="RandomScaleImageMultiViewImage", scales=[0.8]),
    ):
        assert type(TRANSFORMS.build(cfg)).__name__ == cfg["type"]
