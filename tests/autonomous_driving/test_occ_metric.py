"""Occ3D mIoU / F-score (driving_occupancy.md §1.3) on the real sample frame and on hand-built
grids whose values are worked out in the comments; the npz dumps of ``--show-dir``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import BaseDataElement
from synthetic_occ import SHARED_DATA

from autonomous_driving.occupancy_prediction.bevformer_occ import metric as metric_module
from autonomous_driving.occupancy_prediction.bevformer_occ.metric import (
    OCC_CLASS_NAMES,
    OccMetric,
    confusion_matrix,
    frame_fscore,
)

FREE = 17


@pytest.fixture(scope="module")
def real_frame() -> dict[str, np.ndarray]:
    path = SHARED_DATA / "occ3d_sample_labels.npz"
    assert path.is_file(), f"{path} not found: ../shared/data must sit beside the repo"
    with np.load(path) as data:
        return {k: data[k] for k in ("semantics", "mask_lidar", "mask_camera")}


def sample(pred, gt, mask=None, token="t0") -> dict:
    """What mmengine's evaluator hands the metric (BaseDataElement.to_dict())."""
    gt = torch.as_tensor(np.asarray(gt, dtype=np.uint8))
    mask = torch.ones_like(gt) if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.uint8))
    return {
        "pred_occ": torch.as_tensor(np.asarray(pred, dtype=np.uint8)),
        "voxel_semantics": gt,
        "mask_camera": mask,
        "img_metas": [{"sample_idx": token}],
    }


def evaluate(metric: OccMetric, samples: list[dict]) -> dict[str, float]:
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def column(*labels: int) -> np.ndarray:
    """A (n, 1, 1) grid holding ``labels`` along x."""
    return np.asarray(labels, dtype=np.uint8).reshape(-1, 1, 1)


def test_real_frame_predicted_perfectly_is_100(real_frame) -> None:
    gt = real_frame["semantics"]
    out = evaluate(OccMetric(eval_fscore=True), [sample(gt, gt, real_frame["mask_camera"])])
    assert out["mIoU"] == 100.0
    # the classes seen through the camera mask score 100, the others are nan
    seen = set(np.unique(gt[real_frame["mask_camera"].astype(bool)]).tolist())
    for c, name in enumerate(OCC_CLASS_NAMES[:FREE]):
        value = out[f"IoU_{name}"]
        assert (value == 100.0) if c in seen else math.isnan(value), name
    assert out["F_score"] == pytest.approx(1.0) and out["accuracy"] == 1.0 and out["completeness"] == 1.0


def test_real_frame_all_free_prediction(real_frame) -> None:
    gt = real_frame["semantics"]
    pred = np.full_like(gt, FREE)
    out = evaluate(OccMetric(eval_fscore=True), [sample(pred, gt, real_frame["mask_camera"])])
    # every non-free class in view is missed: IoU 0 for each seen class, so mIoU 0
    assert out["mIoU"] == 0.0
    assert out["F_score"] == 0.0  # no predicted point


def test_known_ious_and_nan_classes_excluded() -> None:
    # gt   0 0 1 1 2 17      class 0: tp 1, fn 1        -> 1/2
    # pred 0 1 1 1 17 17     class 1: tp 2, fp 1        -> 2/3
    #                        class 2: tp 0, fn 1        -> 0
    # classes 3..16 never occur: nan, left out; free (1/2) is not in the mIoU.
    out = evaluate(OccMetric(), [sample(column(0, 1, 1, 1, 17, 17), column(0, 0, 1, 1, 2, 17))])
    assert out["IoU_others"] == pytest.approx(50.0)
    assert out["IoU_barrier"] == pytest.approx(200 / 3)
    assert out["IoU_bicycle"] == 0.0
    assert all(math.isnan(out[f"IoU_{n}"]) for n in OCC_CLASS_NAMES[3:FREE])
    assert out["mIoU"] == pytest.approx((50 + 200 / 3 + 0) / 3)
    assert "IoU_free" not in out


def test_confusion_is_summed_over_frames_not_averaged() -> None:
    # frame A: car (4) right once; frame B: car 3 times in GT, predicted once (2 missed).
    # Summed: tp 2, fn 2 -> IoU 1/2 (a per-frame average would give (1 + 1/3) / 2).
    frames = [sample(column(4), column(4), token="a"), sample(column(4, 17, 17), column(4, 4, 4), token="b")]
    out = evaluate(OccMetric(), frames)
    assert out["IoU_car"] == pytest.approx(50.0)
    assert out["mIoU"] == pytest.approx(50.0)


def test_camera_mask_is_honoured() -> None:
    gt = column(4, 4, 4, 11)
    pred = column(4, 4, 0, 3)  # the two wrong voxels lie outside the mask
    mask = column(1, 1, 0, 0)
    assert evaluate(OccMetric(), [sample(pred, gt, mask)])["mIoU"] == 100.0
    # without the mask: car tp 2 fn 1 -> 2/3; others fp 1 -> 0; bus fp 1 -> 0; driveable fn 1 -> 0
    out = evaluate(OccMetric(use_image_mask=False), [sample(pred, gt, mask)])
    assert out["mIoU"] == pytest.approx((200 / 3) / 4)


def test_confusion_matrix_layout_and_checks() -> None:
    hist = confusion_matrix(np.array([1, 2, 2]), np.array([1, 1, 2]), 3)
    np.testing.assert_array_equal(hist, [[0, 0, 0], [0, 1, 1], [0, 0, 1]])  # rows GT, columns pred
    with pytest.raises(ValueError, match="predicted labels"):
        confusion_matrix(np.array([18]), np.array([0]), 18)
    with pytest.raises(ValueError, match="as many voxels"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 18)


def test_known_fscore() -> None:
    # voxels of 0.4 m along x; pred occupied at x = 0, 7, 9, GT at 0, 4 (no two at the
    # 0.4 m threshold): accuracy 1/3 (x=0 only), completeness 1/2 -> F = 2/(3 + 2) = 0.4
    pred = column(4, 17, 17, 17, 17, 17, 17, 11, 17, 16)
    gt = column(4, 17, 17, 17, 15, 17, 17, 17, 17, 17)
    acc, cmpl, f = frame_fscore(
        pred,
        gt,
        voxel_size=(0.4,) * 3,
        pc_range=(-40, -40, -1, 40, 40, 5.4),
        void=(17, 255),
        threshold_acc=0.4,
        threshold_complete=0.4,
    )
    assert (acc, cmpl) == (pytest.approx(1 / 3), 0.5) and f == pytest.approx(0.4)
    # the metric averages the per-frame F over frames: (0.4 + 1) / 2, mask outside -> void
    mask = np.ones_like(gt)
    out = evaluate(OccMetric(eval_fscore=True), [sample(pred, gt, mask), sample(gt, gt, mask, token="b")])
    assert out["F_score"] == pytest.approx(0.7)
    masked = mask.copy()
    masked[7:] = 0  # hides the two stray predictions: both sets {0, 4} vs {0} -> acc 1, cmpl 1/2
    out = evaluate(OccMetric(eval_fscore=True), [sample(pred, gt, masked)])
    assert out["accuracy"] == 1.0 and out["completeness"] == 0.5
    assert out["F_score"] == pytest.approx(2 / 3)


def test_printed_as_the_challenge_and_through_the_evaluator(monkeypatch) -> None:
    printed: list[str] = []
    monkeypatch.setattr(metric_module, "print_log", lambda msg, logger=None: printed.append(msg))
    evaluator = Evaluator(OccMetric(eval_fscore=True))
    gt = torch.as_tensor(column(0, 0, 1, 1, 2, 17))
    pred = torch.as_tensor(column(0, 1, 1, 1, 17, 17))
    element = BaseDataElement(
        metainfo={"img_metas": [{"sample_idx": "tok"}]},
        voxel_semantics=gt,
        mask_camera=torch.ones_like(gt),
        pred_occ=pred,
    )
    evaluator.process([element])
    out = evaluator.evaluate(1)
    assert out["occ/mIoU"] == pytest.approx((50 + 200 / 3) / 3)
    text = printed[0].splitlines()
    assert text[0] == "===> per class IoU of 1 samples:"
    assert text[1] == "===> others - IoU = 50.0" and text[2] == "===> barrier - IoU = 66.67"
    assert text[4] == "===> bus - IoU = nan" and text[18] == "===> mIoU of 1 samples: 38.89"
    assert any(line.startswith("######## F score: ") for line in text)


def test_show_dir_writes_published_npz_dumps(tmp_path, real_frame) -> None:
    gt = real_frame["semantics"]
    pred = np.roll(gt, 1, axis=0)
    metric = OccMetric(show_dir=str(tmp_path / "show"))
    # two frames, the second listed twice (a token the dataset holds twice gets its copy)
    evaluate(
        metric,
        [sample(pred, gt, token="first"), sample(gt, gt, token="second"), sample(gt, gt, token="second")],
    )
    files = sorted(p.name for p in (tmp_path / "show").iterdir())
    assert files == ["0000.npz", "0001.npz", "0002.npz"]  # nothing half-written left behind
    with np.load(tmp_path / "show" / "0000.npz") as dump:
        assert dump["pred"].dtype == np.uint8 and dump["pred"].shape == (200, 200, 16)
        np.testing.assert_array_equal(dump["pred"], pred)
        np.testing.assert_array_equal(dump["gt"], gt)
        assert str(dump["sample_token"]) == "first"
    with np.load(tmp_path / "show" / "0002.npz") as dump:
        assert str(dump["sample_token"]) == "second"


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="metric must be among"):
        OccMetric(metric="segm")
    with pytest.raises(ValueError, match="pred_occ has shape"):
        evaluate(OccMetric(), [sample(column(0, 1), column(0, 1, 2))])
    with pytest.raises(KeyError, match="pred_occ"):
        OccMetric().process({}, [{"voxel_semantics": torch.zeros(2, 1, 1)}])
    with pytest.raises(ValueError, match="mask_camera has shape"):
        evaluate(OccMetric(), [sample(column(0, 1), column(0, 1), mask=column(1))])
