"""AV2Dataset, the map pipeline transforms and VectorMapMetric on generated AV2 frames:
items in the bev_common contract's form with the vectorised lines, the image steps on
hand-checked numbers (padding rescales ego2img as published), and the metric wrapper."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, METRICS, MODELS, TRANSFORMS
from synthetic_av2 import make_av2_dataset

import autonomous_driving.online_hdmap.registration  # noqa: F401  (registers everything)
from autonomous_driving.online_hdmap.annotations import frame_map_lines, iter_frames, load_annotations
from autonomous_driving.online_hdmap.ipm import get_campos
from autonomous_driving.online_hdmap.submission import read_submission
from autonomous_driving.online_hdmap.vectorize import (
    map_geoms_from_frame,
    normalize_line,
    polygonize_local_map_bbox,
    vectorize_map,
)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
SIZE = (48, 85)  # (h, w) the cameras are resized to: pads to 64 x 96


def train_pipeline(size=SIZE):
    return [
        dict(type="VectorizeMap", coords_dim=2, roi_size=(60, 30), simplify=True, normalize=True),
        dict(
            type="PolygonizeLocalMapBbox", canvas_size=(200, 100), coord_dim=2, num_class=3, threshold=4 / 200
        ),
        dict(type="LoadMultiViewImageFromFiles", color_type="unchanged"),
        dict(type="ResizeMultiViewImages", size=size),
        dict(type="PadMultiViewImages", size_divisor=32, change_intrinsics=True),
        dict(type="PackMapInputs", keys=["img", "polys", "vectors"], meta_keys=["token", "ego2img"]),
    ]


def eval_pipeline(size=SIZE):
    return [
        step
        for step in train_pipeline(size)
        if step["type"] not in ("VectorizeMap", "PolygonizeLocalMapBbox")
    ][:-1] + [dict(type="PackMapInputs", keys=["img"], meta_keys=["token", "ego2img"])]


@pytest.fixture(scope="module")
def av2(tmp_path_factory) -> dict:
    return make_av2_dataset(
        tmp_path_factory.mktemp("av2"), segments=2, frames_per_segment=2, splits=("train", "test"), seed=3
    )


def build_dataset(av2, split="train", **kwargs):
    pipeline = train_pipeline() if split == "train" else eval_pipeline()
    return DATASETS.build(
        dict(
            type="AV2Dataset",
            ann_file=av2[f"{split}_ann"],
            root_path=av2["root"],
            pipeline=pipeline,
            **kwargs,
        )
    )


def test_dataset_items_are_the_contract_with_the_vectorised_lines(av2) -> None:
    ds = build_dataset(av2)
    frames = list(iter_frames(load_annotations(av2["train_ann"])))
    assert len(ds) == 4 and [ds.get_data_info(i)["token"] for i in range(4)] == av2["tokens"]["train"]
    assert ds.metainfo["classes"] == ("ped_crossing", "divider", "boundary")
    item = ds[1]
    img = item["inputs"]["img"]
    assert img.shape == (1, 7, 3, 64, 96) and img.dtype == torch.uint8
    assert not img[..., 48:, :].any() and not img[..., 85:].any()  # bottom/right zero padding
    sample = item["data_samples"]
    assert sample.token == av2["tokens"]["train"][1]
    meta = sample.img_metas[0]
    assert meta["token"] == sample.token and meta["img_shape"] == [(48, 85, 3)] * 7
    assert meta["pad_shape"] == [(64, 96, 3)] * 7
    assert meta["ego2img_pad_scaled"] is True  # VectorMapNet must not apply the pad quirk again
    # ego2img = diag(resize) @ diag(pad quirk) applied to pad4(K) @ extrinsic, per camera
    cam = frames[1]["sensor"]["ring_front_center"]  # portrait: 48 wide, 64 high
    k4 = np.eye(4)
    k4[:3, :3] = cam["intrinsic"]
    expected = np.diag([96 / 85 * 85 / 48, 64 / 48 * 48 / 64, 1, 1]) @ k4 @ np.asarray(cam["extrinsic"])
    np.testing.assert_allclose(sample.ego2img[0], expected, rtol=1e-12)
    np.testing.assert_array_equal(sample.ego2img[3], meta["ego2img"][3])
    # the GT: VectorizeMap + PolygonizeLocalMapBbox of the frame's lines, unchanged
    vectors = vectorize_map(map_geoms_from_frame(frames[1]))
    polys = polygonize_local_map_bbox(vectors)
    assert sorted(sample.vectors) == [0, 1, 2]
    for label in vectors:
        assert len(sample.vectors[label]) == len(vectors[label])
        for got, want in zip(sample.vectors[label], vectors[label]):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sample.polys["keypoint"], polys["keypoint"])
    np.testing.assert_array_equal(sample.polys["qkeypoint"], polys["qkeypoint"])
    np.testing.assert_array_equal(sample.polys["det_label"], polys["det_label"])
    assert [len(s) for s in sample.polys["polylines"]] == [len(s) for s in polys["polylines"]]
    # lines in the normalised frame: inside [0, 1] after simplification (pre-truncated to the ROI)
    assert all(((v >= 0) & (v <= 1)).all() for lines in sample.vectors.values() for v in lines)


def test_the_model_does_not_apply_the_pad_quirk_twice(av2) -> None:
    from autonomous_driving.online_hdmap.vectormapnet import frame_meta, padded_ego2img

    sample = build_dataset(av2)[0]["data_samples"]
    meta = frame_meta(sample)
    np.testing.assert_array_equal(padded_ego2img(meta, (64, 96)), np.asarray(sample.ego2img))
    # without the pipeline's mark the model would scale the already scaled rows again
    twice = padded_ego2img({**meta, "ego2img_pad_scaled": False}, (64, 96))
    np.testing.assert_allclose(twice[1, 0], np.asarray(sample.ego2img)[1, 0] * 96 / 85)


def test_interval_and_test_split(av2) -> None:
    every2 = build_dataset(av2, interval=2)
    assert [every2.get_data_info(i)["token"] for i in range(len(every2))] == av2["tokens"]["train"][::2]
    test = build_dataset(av2, split="test", test_mode=True)
    item = test[0]
    assert item["inputs"]["img"].shape == (1, 7, 3, 64, 96)
    assert "polys" not in item["data_samples"] and item["data_samples"].token == av2["tokens"]["test"][0]
    with pytest.raises(ValueError, match="has no 'annotation'"):
        build_dataset(av2, split="test")  # a training split needs map lines
    with pytest.raises(ValueError, match="cat2id"):
        build_dataset(av2, cat2id={"divider": 0, "ped_crossing": 1, "boundary": 2})
    with pytest.raises(ValueError, match="interval"):
        build_dataset(av2, interval=0)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        DATASETS.build(dict(type="AV2Dataset", ann_file=av2["root"] + "/nope.json", pipeline=[]))


def test_relative_paths_join_data_root(av2) -> None:
    ds = DATASETS.build(
        dict(
            type="AV2Dataset",
            data_root=av2["root"],
            ann_file="train_annotations.json",
            root_path="",
            pipeline=[],
        )
    )
    assert ds.get_data_info(0)["img_filename"][0].startswith(av2["root"])
    assert len(ds) == 4


def test_resize_updates_ego2img_and_intrinsics() -> None:
    imgs = [np.zeros((100, 200, 3), np.uint8), np.zeros((50, 40, 3), np.uint8)]
    k = np.array([[100.0, 0, 100], [0, 100, 50], [0, 0, 1]])
    e2i = [np.arange(16, dtype=np.float64).reshape(4, 4) + 1, np.eye(4)]
    out = TRANSFORMS.build(dict(type="ResizeMultiViewImages", size=(25, 50))).transform(
        {"img": imgs, "ego2img": e2i, "intrinsics": [k, k]}
    )
    assert [i.shape for i in out["img"]] == [(25, 50, 3)] * 2 and out["img_shape"] == [(25, 50, 3)] * 2
    np.testing.assert_allclose(out["ego2img"][0][0], e2i[0][0] * 0.25)  # 50 / 200
    np.testing.assert_allclose(out["ego2img"][0][1], e2i[0][1] * 0.25)  # 25 / 100
    np.testing.assert_allclose(out["ego2img"][0][2:], e2i[0][2:])
    np.testing.assert_allclose(np.diag(out["ego2img"][1]), [1.25, 0.5, 1, 1])  # 50/40, 25/50
    np.testing.assert_allclose(out["intrinsics"][0], [[25, 0, 25], [0, 25, 12.5], [0, 0, 1]])
    with pytest.raises(KeyError, match="ego2img"):
        TRANSFORMS.build(dict(type="ResizeMultiViewImages", size=(25, 50))).transform({"img": imgs})


def test_padding_rescales_ego2img_as_published() -> None:
    # The published sizes: 455 wide, padded to 480; rows 0 / 1 scaled by 480/455 and 256/256.
    e2i = np.array([[200.0, 0, 227.5, 0], [0, 200, 128, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    results = {"img": [np.ones((256, 455, 3), np.uint8)], "ego2img": [e2i]}
    out = TRANSFORMS.build(
        dict(type="PadMultiViewImages", size_divisor=32, change_intrinsics=True)
    ).transform(dict(results))
    assert out["img"][0].shape == (256, 480, 3) and out["pad_shape"] == [(256, 480, 3)]
    assert out["img_shape"] == [(256, 455, 3)]
    assert out["img"][0][:, 455:].sum() == 0 and out["img"][0][:, :455].all()
    np.testing.assert_allclose(out["ego2img"][0][0], [200 * 480 / 455, 0, 227.5 * 480 / 455, 0])
    np.testing.assert_allclose(out["ego2img"][0][1:], e2i[1:])
    # With the IPM's normalisation by the padded width, resized pixel u lands at 2u/455 - 1:
    # the right edge of the image content (u = 455) reaches the grid edge (stretched).
    # ego2img here is pad4(K) with an identity extrinsic: a point (x, 0, z) is at pixel
    # u = 200 x / z + 227.5 of the resized image.
    u = torch.tensor([247.5, 400.0, 454.0], dtype=torch.float64)
    pts = torch.stack(
        [(u - 227.5) / 200 * 10, torch.zeros(3, dtype=torch.float64), torch.full((3,), 10.0)], -1
    )
    grid, mask = get_campos(pts[None], torch.from_numpy(out["ego2img"][0])[None, None], (256, 480))
    assert mask.all()
    np.testing.assert_allclose(grid[0, :, 0].numpy(), (2 * u / 455 - 1).numpy(), atol=1e-9)
    plain = TRANSFORMS.build(dict(type="PadMultiViewImages", size_divisor=32)).transform(
        {"img": [np.ones((256, 455, 3), np.uint8)], "ego2img": [e2i]}
    )
    np.testing.assert_array_equal(plain["ego2img"][0], e2i)
    assert plain["ego2img_pad_scaled"] is False and out["ego2img_pad_scaled"] is True
    with pytest.raises(ValueError, match="exactly one"):
        TRANSFORMS.build(dict(type="PadMultiViewImages"))


def test_vectorize_and_polygonize_wrappers_name_missing_inputs() -> None:
    with pytest.raises(KeyError, match="map_geoms"):
        TRANSFORMS.build(dict(type="VectorizeMap")).transform({"token": "t"})
    with pytest.raises(KeyError, match="VectorizeMap before"):
        TRANSFORMS.build(dict(type="PolygonizeLocalMapBbox")).transform({})
    out = TRANSFORMS.build(dict(type="PolygonizeLocalMapBbox")).transform({"vectors": {0: [], 1: [], 2: []}})
    assert out["polys"] == []  # no lines: the model drops the sample, as published
    with pytest.raises(KeyError, match="'polys' is not in the results"):
        TRANSFORMS.build(dict(type="PackMapInputs", keys=["img", "polys"], meta_keys=[])).transform(
            {"img": [np.zeros((4, 4, 3), np.uint8)]}
        )


def test_preprocessor_normalises_the_packed_batch(av2) -> None:
    ds = build_dataset(av2, split="test", test_mode=True)
    items = [ds[0], ds[1]]
    pre = MODELS.build(
        dict(type="MultiViewDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True, pad_size_divisor=32)
    )
    batch = pre(
        {
            "inputs": {"img": [i["inputs"]["img"] for i in items]},
            "data_samples": [i["data_samples"] for i in items],
        }
    )
    x = batch["inputs"]["img"]
    assert x.shape == (2, 1, 7, 3, 64, 96) and x.dtype == torch.float32
    raw = items[0]["inputs"]["img"][0, 2].float()  # camera 2, BGR uint8
    want = (raw[[2, 1, 0], :48, :85] - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(x[0, 0, 2, :, :48, :85], want)
    assert not x[..., 48:, :].any() and not x[..., 85:].any()  # padding is 0 after normalisation


def gt_predictions(ann_file: str) -> list[dict]:
    """Data samples whose predictions are the GT lines, normalised as the model outputs them."""
    out = []
    for frame in iter_frames(load_annotations(ann_file)):
        vectors, labels = [], []
        for label, lines in enumerate(frame_map_lines(frame).values()):
            vectors += [torch.from_numpy(normalize_line(line)) for line in lines]
            labels += [label] * len(lines)
        out.append(
            dict(
                token=frame["timestamp"],
                pred_vectors=vectors,
                pred_scores=torch.full((len(labels),), 0.8),
                pred_labels=torch.tensor(labels),
            )
        )
    return out


def test_metric_on_predictions_equal_to_gt_gives_map_1(av2, tmp_path) -> None:
    # the ground truth comes from the evaluated dataset's metainfo (no ann_file given)
    metric = METRICS.build(dict(type="VectorMapMetric", out_dir=str(tmp_path)))
    metric.dataset_meta = build_dataset(av2).metainfo
    assert metric.dataset_meta["ann_file"] == os.path.abspath(av2["train_ann"])
    preds = gt_predictions(av2["train_ann"])
    metric.process({}, preds[:2])
    metric.process({}, preds[2:])
    res = metric.evaluate(len(preds))
    assert res["chamfer/mAP"] == pytest.approx(1.0)
    for cat in ("ped_crossing", "divider", "boundary"):
        assert res[f"chamfer/{cat}"] == pytest.approx(1.0)
        assert res[f"chamfer/{cat}/AP@0.5"] == pytest.approx(1.0)
    sub = read_submission(tmp_path / "submission_vector.json")
    assert list(sub["results"]) == av2["tokens"]["train"] and sub["meta"]["method"] == "VectorMapNet"
    # one frame predicted empty: its GT lines are missed, AP drops below 1
    metric.process({}, [dict(preds[0], pred_vectors=[], pred_scores=[], pred_labels=[])] + preds[1:])
    assert metric.evaluate(len(preds))["chamfer/mAP"] < 1.0


def test_metric_format_only_and_errors(av2, tmp_path) -> None:
    metric = METRICS.build(dict(type="VectorMapMetric", format_only=True, out_dir=str(tmp_path / "w")))
    preds = gt_predictions(av2["train_ann"])
    metric.process({}, preds)
    assert metric.evaluate(len(preds)) == {}
    sub = json.loads((tmp_path / "w" / "submission_vector.json").read_text())
    first = sub["results"][preds[0]["token"]]
    np.testing.assert_allclose(
        first["vectors"][0],
        frame_map_lines(next(iter_frames(load_annotations(av2["train_ann"]))))["ped_crossing"][0],
    )
    no_gt = METRICS.build(dict(type="VectorMapMetric"))
    no_gt.process({}, preds)
    with pytest.raises(ValueError, match="no ground truth"):
        no_gt.evaluate(len(preds))
    with pytest.raises(ValueError, match="out_dir"):
        METRICS.build(dict(type="VectorMapMetric", format_only=True))
    with pytest.raises(KeyError, match="pred_scores"):
        metric.process({}, [{"token": "1", "pred_vectors": [], "pred_labels": []}])
