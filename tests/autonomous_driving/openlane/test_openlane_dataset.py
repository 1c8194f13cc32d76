"""OpenLaneV2SubsetADataset, the published pipeline steps and the OpenLaneV2Metric wrapper on
generated frames in the real on-disk format (after ``collection.preprocess``)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.structures import BaseDataElement
from synthetic_openlane import make_openlane_dataset

from autonomous_driving.bev_common import data_preprocessor  # noqa: F401 - registers the preprocessor
from autonomous_driving.openlane_v2 import metric, transforms  # noqa: F401 - registrations
from autonomous_driving.openlane_v2 import pipeline as _pipeline  # noqa: F401 - registrations
from autonomous_driving.openlane_v2.bezier import bezier_Endpointfixed
from autonomous_driving.openlane_v2.collection import load_collection, preprocess
from autonomous_driving.openlane_v2.dataset import OpenLaneV2SubsetADataset
from autonomous_driving.openlane_v2.geometry import frame_geometry
from autonomous_driving.openlane_v2.submission import load_submission

NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
GT_KEYS = ["gt_lc", "gt_lc_labels", "gt_te", "gt_te_labels", "gt_topology_lclc", "gt_topology_lcte"]
TRAIN_PIPELINE = [
    dict(type="CustomLoadMultiViewImageFromFiles", to_float32=True),
    dict(type="NormalizeMultiviewImage", **NORM),
    dict(type="PhotoMetricDistortionMultiViewImage"),
    dict(type="ResizeFrontView"),
    dict(type="CustomPadMultiViewImage", size_divisor=32),
    dict(type="CustomParameterizeLane", method="bezier_Endpointfixed", method_para=dict(n_control=5)),
    dict(type="PackOpenLaneInputs", keys=["img", *GT_KEYS]),
]
TEST_PIPELINE = [
    dict(type="CustomLoadMultiViewImageFromFiles", to_float32=True),
    dict(type="NormalizeMultiviewImage", **NORM),
    dict(type="ResizeFrontView"),
    dict(type="CustomPadMultiViewImage", size_divisor=32),
    dict(type="PackOpenLaneInputs", keys=["img"]),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_openlane_dataset(
        tmp_path_factory.mktemp("openlane"), splits={"train": 1, "val": 1, "test": 1})
    preprocess(data["root"], progress=False)
    return data


def _dataset(data, split, pipeline, **kwargs):
    root = str(data["root"])
    return OpenLaneV2SubsetADataset(
        data_root=root, meta_root=root, collection=f"data_dict_subset_A_{split}", pipeline=pipeline,
        test_mode=split != "train", **kwargs)


def test_training_item_is_the_contract_form_with_the_published_ground_truth(data):
    ds = _dataset(data, "train", TRAIN_PIPELINE)
    frames = load_collection(data["root"] / "data_dict_subset_A_train.pkl")
    assert len(ds) == len(frames) == 2
    w, h = data["image_size"]
    pad_h = -(-h // 32) * 32
    for idx, (token, frame) in enumerate(frames.items()):
        item = ds[idx]
        img = item["inputs"]["img"]
        assert img.dtype == torch.float32 and tuple(img.shape) == (1, 7, 3, pad_h, -(-w // 32) * 32)
        sample = item["data_samples"]
        (meta,) = sample.metainfo["img_metas"]
        assert meta["token"] == token and meta["scene_token"] == token[1] and meta["sample_idx"] == token[2]
        # every camera, the front one resized, is (h, w) = landscape before padding
        assert [tuple(s) for s in meta["img_shape"]] == [(h, w, 3)] * 7
        # the portrait front image (w wide = h_front) became w wide: w_scale = w / h, h_scale = h / w
        np.testing.assert_allclose(meta["scale_factor"], [w / h, h / w, w / h, h / w], rtol=1e-6)
        geo = frame_geometry(frame)
        np.testing.assert_allclose(meta["lidar2img"][0], np.diag([w / h, h / w, 1, 1]) @ geo["lidar2img"][0])
        for cam in range(1, 7):
            np.testing.assert_allclose(meta["lidar2img"][cam], geo["lidar2img"][cam])
        np.testing.assert_allclose(meta["can_bus"], geo["can_bus"])
        assert meta["img_norm_cfg"]["to_rgb"] is True  # normalised once, in the pipeline
        ann = frame["annotation"]
        n, k = len(ann["lane_centerline"]), len(ann["traffic_element"])
        expected_lc = np.stack(
            [bezier_Endpointfixed(x["points"], 5).reshape(-1) for x in ann["lane_centerline"]]
        ).astype(np.float32)
        torch.testing.assert_close(sample.gt_lc, torch.from_numpy(expected_lc))
        assert sample.gt_lc_labels.dtype == torch.int64 and sample.gt_lc_labels.tolist() == [0] * n
        te = np.stack([np.asarray(x["points"]).reshape(4) for x in ann["traffic_element"]])
        torch.testing.assert_close(
            sample.gt_te, torch.from_numpy((te * meta["scale_factor"]).astype(np.float32)))
        assert sample.gt_te_labels.tolist() == [x["attribute"] for x in ann["traffic_element"]]
        assert sample.gt_topology_lclc.dtype == torch.int8 and tuple(sample.gt_topology_lclc.shape) == (n, n)
        assert np.array_equal(sample.gt_topology_lcte.numpy(), ann["topology_lcte"]) and k > 0


def test_batch_through_the_data_preprocessor_is_not_normalised_twice(data):
    from mmdet.registry import MODELS

    ds = _dataset(data, "val", TEST_PIPELINE)
    items = [ds[0], ds[1]]
    pre = MODELS.build(dict(type="MultiViewDataPreprocessor", mean=NORM["mean"], std=NORM["std"],
                            bgr_to_rgb=True, pad_size_divisor=32))
    batch = pre(pseudo_collate(items))
    img = batch["inputs"]["img"]
    assert tuple(img.shape[:3]) == (2, 1, 7)
    torch.testing.assert_close(img[0], items[0]["inputs"]["img"])
    # a test item carries no ground truth: the metric reads it from the collection
    assert not set(GT_KEYS) & set(batch["data_samples"][0].keys())


def test_lanes_project_onto_the_lines_drawn_in_the_resized_front_image(data):
    ds = _dataset(data, "val", [dict(type="CustomLoadMultiViewImageFromFiles"), dict(type="ResizeFrontView"),
                                dict(type="PackOpenLaneInputs", keys=["img"])])
    frame = next(iter(load_collection(data["root"] / "data_dict_subset_A_val.pkl").values()))
    item = ds[0]
    (meta,) = item["data_samples"].metainfo["img_metas"]
    front = item["inputs"]["img"][0, 0].permute(1, 2, 0).numpy().astype(np.int32)  # (h, w, 3) BGR
    h, w = front.shape[:2]
    hits = total = 0
    for lane in frame["annotation"]["lane_centerline"]:
        pts = np.c_[lane["points"], np.ones(len(lane["points"]))] @ meta["lidar2img"][0].T
        ahead = pts[:, 2] > 1.0
        uv = pts[ahead, :2] / pts[ahead, 2:3]
        for u, v in uv[(uv[:, 0] >= 1) & (uv[:, 0] < w - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < h - 1)]:
            total += 1
            patch = front[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2]
            hits += bool(np.abs(patch - 90).max() > 20)  # the background is grey 90
    assert total >= 3 and hits / total > 0.8


def test_dataset_errors_name_the_problem(data, tmp_path):
    root = str(data["root"])
    with pytest.raises(FileNotFoundError, match="data_dict_subset_A_nope.pkl"):
        OpenLaneV2SubsetADataset(data_root=root, meta_root=root, collection="data_dict_subset_A_nope")
    # without meta_root the collection is looked for under data_root
    ds = OpenLaneV2SubsetADataset(data_root=root, collection="data_dict_subset_A_val", test_mode=True)
    assert len(ds) == 2
    with pytest.raises(ValueError, match="queue_length must be 1"):
        _dataset(data, "train", [], queue_length=4)
    with pytest.raises(ValueError, match="not both"):
        OpenLaneV2SubsetADataset(data_root=root, ann_file="x.pkl", collection="data_dict_subset_A_train")
    with pytest.raises(ValueError, match="training needs annotated frames"):
        _dataset(data, "test", []).__class__(data_root=root, meta_root=root,
                                             collection="data_dict_subset_A_test", test_mode=False)
    frames = load_collection(data["root"] / "data_dict_subset_A_train.pkl")
    for frame in frames.values():  # the front camera moved to the end
        frame["sensor"] = dict(list(frame["sensor"].items())[1:] + list(frame["sensor"].items())[:1])
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(frames))
    ds = OpenLaneV2SubsetADataset(data_root=root, ann_file=str(bad), pipeline=[])
    with pytest.raises(ValueError, match="first camera must be 'ring_front_center'"):
        ds.get_data_info(0)
    with pytest.raises(ValueError, match="must end with PackOpenLaneInputs"):
        _dataset(data, "train", [dict(type="CustomLoadMultiViewImageFromFiles")])[0]


def test_test_split_items_have_images_and_no_ground_truth(data):
    ds = _dataset(data, "test", TEST_PIPELINE)
    info = ds.get_data_info(0)
    assert not set(GT_KEYS) & set(info) and len(info["img_filename"]) == 7
    assert all(os.path.isfile(p) for p in info["img_filename"])
    assert tuple(ds[0]["inputs"]["img"].shape[:2]) == (1, 7)


# ---------------------------------------------------------------- the metric wrapper


def _perfect_predictions(frames, shuffle_scores=False):
    """Model outputs equal to the ground truth: control points fitted to the lanes (exact: the
    generated lanes are polynomials of degree <= 2 in the point index), the boxes, the graphs."""
    samples = []
    rng = np.random.default_rng(0)
    for token, frame in frames.items():
        ann = frame["annotation"]
        ctrl = np.stack([bezier_Endpointfixed(x["points"], 5).reshape(-1) for x in ann["lane_centerline"]])
        n = len(ctrl)
        scores = rng.permutation(np.linspace(0.6, 0.9, n)) if shuffle_scores else np.full(n, 0.9)
        det = np.stack([np.r_[np.asarray(x["points"]).reshape(4), x["attribute"]]
                        for x in ann["traffic_element"]])
        sample = BaseDataElement(metainfo={"img_metas": [{"token": token}]})
        sample.pred_lc = [torch.tensor(ctrl, dtype=torch.float32), torch.tensor(scores[:, None])]
        sample.pred_te = [torch.tensor(det, dtype=torch.float32), torch.full((len(det),), 0.8)]
        sample.pred_topology_lclc = torch.tensor(ann["topology_lclc"], dtype=torch.float32)
        sample.pred_topology_lcte = torch.tensor(ann["topology_lcte"], dtype=torch.float32)
        samples.append(sample)
    return samples


def _evaluate(samples, **metric_kwargs):
    evaluator = Evaluator(dict(type="OpenLaneV2Metric", **metric_kwargs))
    evaluator.process(samples[:1], None)
    evaluator.process(samples[1:], None)
    return evaluator.evaluate(len(samples))


def test_metric_on_the_ground_truth_scores_one_and_dumps_a_valid_submission(data, tmp_path):
    ann_file = str(data["root"] / "data_dict_subset_A_val.pkl")
    frames = load_collection(ann_file)
    out = _evaluate(_perfect_predictions(frames), ann_file=ann_file, data_root=str(data["root"]),
                    dump=True, dump_dir=str(tmp_path / "dump"), visualization=True,
                    visualization_dir=str(tmp_path / "vis"))
    for key in ("OLS", "DET_l", "DET_t", "TOP_ll", "TOP_lt", "F-Score"):
        assert out[f"OpenLane-V2/{key}"] == pytest.approx(1.0), key
    submission = load_submission(tmp_path / "dump" / "result.pkl")  # runs check_results
    assert set(submission["results"]) == set(frames)
    assert submission["method"] == "ROAD_BEVFormer"
    pictures = sorted(os.listdir(tmp_path / "vis"))
    assert len(pictures) == 2 * len(frames) and all(os.path.getsize(tmp_path / "vis" / p) for p in pictures)


def test_metric_topology_pairing_and_the_published_switch(data):
    ann_file = str(data["root"] / "data_dict_subset_A_val.pkl")
    frames = load_collection(ann_file)
    samples = _perfect_predictions(frames, shuffle_scores=True)
    paired = _evaluate(samples, ann_file=ann_file)
    published = _evaluate(samples, ann_file=ann_file, published_topology_order=True)
    # detection does not depend on the pairing; the query-order matrices against the
    # score-sorted lanes (published) lose the edges the paired ones keep
    assert published["OpenLane-V2/DET_l"] == paired["OpenLane-V2/DET_l"] == pytest.approx(1.0)
    assert published["OpenLane-V2/TOP_ll"] < paired["OpenLane-V2/TOP_ll"]
    assert published["OpenLane-V2/TOP_lt"] < paired["OpenLane-V2/TOP_lt"]


def test_metric_refuses_bad_arguments_and_incomplete_outputs(data):
    ann_file = str(data["root"] / "data_dict_subset_A_val.pkl")
    with pytest.raises(ValueError, match="dump_dir"):
        Evaluator(dict(type="OpenLaneV2Metric", ann_file=ann_file, dump=True))
    with pytest.raises(ValueError, match="visualization_dir"):
        Evaluator(dict(type="OpenLaneV2Metric", ann_file=ann_file, visualization=True))
    sample = _perfect_predictions(load_collection(ann_file))[0]
    del sample.pred_te
    with pytest.raises(KeyError, match="pred_te"):
        Evaluator(dict(type="OpenLaneV2Metric", ann_file=ann_file)).process([sample], None)
    sample = BaseDataElement(metainfo={"img_metas": [{}]})
    with pytest.raises(KeyError, match="token"):
        Evaluator(dict(type="OpenLaneV2Metric", ann_file=ann_file)).process([sample], None)
    # frames missing from the predictions: refused, not scored as a subset
    samples = _perfect_predictions(load_collection(ann_file))[:1]
    evaluator = Evaluator(dict(type="OpenLaneV2Metric", ann_file=ann_file))
    evaluator.process(samples, None)
    with pytest.raises(ValueError, match="1 missing"):
        evaluator.evaluate(1)


def test_metric_on_the_unannotated_test_split_only_dumps(data, tmp_path):
    ann_file = str(data["root"] / "data_dict_subset_A_test.pkl")
    samples = []
    for token in load_collection(ann_file):
        sample = BaseDataElement(metainfo={"img_metas": [{"token": token}]})
        sample.pred_lc = [torch.linspace(-5, 5, 2 * 15).reshape(2, 15), torch.tensor([[0.7], [0.2]])]
        sample.pred_te = [torch.tensor([[1.0, 2.0, 8.0, 9.0, 3.0]]), torch.tensor([0.5])]
        sample.pred_topology_lclc = torch.tensor([[0.0, 0.9], [0.1, 0.0]])
        sample.pred_topology_lcte = torch.tensor([[0.3], [0.8]])
        samples.append(sample)
    out = _evaluate(samples, ann_file=ann_file, dump=True, dump_dir=str(tmp_path))
    assert out == {}
    submission = load_submission(tmp_path / "result.pkl")
    first = next(iter(submission["results"].values()))["predictions"]
    # lanes ascending by score, the relations permuted with them (paired, not query order)
    assert [x["confidence"] for x in first["lane_centerline"]] == pytest.approx([0.2, 0.7])
    np.testing.assert_allclose(first["topology_lclc"], [[0.0, 0.1], [0.9, 0.0]])
    np.testing.assert_allclose(first["topology_lcte"], [[0.8], [0.3]])
    assert first["traffic_element"][0]["attribute"] == 3.0
