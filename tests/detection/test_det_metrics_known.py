"""The COCO evaluator the detection configs use, on predictions whose score is known: the
ground truth itself scores box and mask mAP 1.0, a wrong class 0.0, and a box shifted by
half its width lies in between (IoU 1/3: counted at no IoU threshold of 0.5..0.95)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DETECTION
from mmengine.config import Config
from tiny_det_data import CLASSES, write_tiny_coco

CONFIG = DETECTION / "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"


def _evaluate(ann_file, predict) -> dict:
    from mmdet.registry import METRICS
    from mmdet.utils import register_all_modules
    from pycocotools.coco import COCO

    register_all_modules()
    evaluator = Config.fromfile(str(CONFIG)).val_evaluator
    metric = METRICS.build(dict(evaluator, ann_file=str(ann_file), format_only=False, outfile_prefix=None))
    metric.dataset_meta = dict(classes=CLASSES)
    coco = COCO(str(ann_file))
    images = json.loads(ann_file.read_text())["images"]
    for image in images:
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        x, y, w, h = ann["bbox"]
        box, label, mask = predict(
            np.array([x, y, x + w, y + h]), ann["category_id"] - 1, coco.annToMask(ann)
        )
        metric.process(
            {},
            [
                dict(
                    img_id=image["id"],
                    ori_shape=(image["height"], image["width"]),
                    pred_instances=dict(
                        bboxes=torch.tensor(box, dtype=torch.float32)[None],
                        scores=torch.ones(1),
                        labels=torch.tensor([label]),
                        masks=torch.from_numpy(mask.astype(bool))[None],
                    ),
                )
            ],
        )
    return metric.evaluate(size=len(images))


@pytest.fixture(scope="module")
def ann_file(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco_known"))


def test_config_evaluates_boxes_and_masks():
    evaluator = Config.fromfile(str(CONFIG)).val_evaluator
    assert evaluator.type == "CocoMetric" and set(evaluator.metric) == {"bbox", "segm"}


def test_ground_truth_scores_map_1(ann_file):
    result = _evaluate(ann_file, lambda box, label, mask: (box, label, mask))
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP", "coco/segm_mAP_75"):
        assert result[key] == pytest.approx(1.0), (key, result)


def test_wrong_class_scores_0(ann_file):
    result = _evaluate(ann_file, lambda box, label, mask: (box, (label + 1) % len(CLASSES), mask))
    assert result["coco/bbox_mAP"] == 0.0 and result["coco/segm_mAP"] == 0.0


def test_half_shifted_box_scores_0_and_the_exact_mask_1(ann_file):
    def shifted(box, label, mask):
        width = box[2] - box[0]
        return box + np.array([width / 2, 0, width / 2, 0]), label, mask

    result = _evaluate(ann_file, shifted)
    assert result["coco/bbox_mAP"] == 0.0  # IoU 1/3 < 0.5
    assert result["coco/segm_mAP"] == pytest.approx(1.0)  # masks are scored on their own
