"""The mIoU evaluator the segmentation configs use, on label maps whose score is known:
the ground truth itself scores 100, and a constant prediction on a half/half map scores
IoU 50 for the predicted class and 0 for the other (mIoU 25, pixel accuracy 50)."""

from __future__ import annotations

import pytest
import torch
from mmengine.config import Config
from seg_testutils import CLASSES, T_ADE


def _evaluate(pairs) -> dict:
    import mmseg_custom  # noqa: F401
    from mmseg.registry import METRICS

    evaluator = Config.fromfile(str(T_ADE)).val_evaluator
    metric = METRICS.build(evaluator)
    metric.dataset_meta = dict(classes=CLASSES)
    for prediction, truth in pairs:
        metric.process(
            {}, [dict(pred_sem_seg=dict(data=prediction[None]), gt_sem_seg=dict(data=truth[None]))]
        )
    return metric.evaluate(len(pairs))


def _half_half() -> torch.Tensor:
    truth = torch.zeros(6, 8, dtype=torch.long)
    truth[:, 4:] = 1
    return truth


def test_config_evaluates_miou():
    assert Config.fromfile(str(T_ADE)).val_evaluator.type == "IoUMetric"


def test_ground_truth_scores_100():
    truth = torch.randint(0, len(CLASSES), (2, 6, 8), generator=torch.Generator().manual_seed(0))
    result = _evaluate([(t.clone(), t) for t in truth])
    assert result["mIoU"] == pytest.approx(100.0) and result["aAcc"] == pytest.approx(100.0)


def test_constant_prediction_on_half_half_map():
    truth = _half_half()
    result = _evaluate([(torch.zeros_like(truth), truth)])
    assert result["mIoU"] == pytest.approx(25.0)  # (50 + 0) / 2; the absent class is left out
    assert result["aAcc"] == pytest.approx(50.0)
