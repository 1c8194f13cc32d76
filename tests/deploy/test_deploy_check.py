"""The onnxruntime-vs-PyTorch check of detection/deploy.py (dense_common/deploy.py): it
compares what there is, passes when both find nothing, and names why it fails."""

from __future__ import annotations

import numpy as np

from dense_common.deploy import _format_check, compare_detections, compare_segmentation


def _dets(*rows: tuple[float, float, float, float, float], label: int = 0) -> dict[str, np.ndarray]:
    padded = list(rows) + [(0, 0, 0, 0, 0)] * 3  # mmdeploy pads with zero-score rows
    return {"dets": np.array([padded], np.float32), "labels": np.full((1, len(padded)), label, np.int64)}


def test_no_detections_on_either_side_is_agreement():
    result = compare_detections(_dets(), _dets())
    assert result["ok"] and result["problems"] == []
    text = _format_check({**result, "image": "a.jpg", "input_shape": [1, 3, 32, 32]})
    assert "neither finds a detection: they agree" in text and "MISMATCH" not in text


def test_each_mismatch_says_why():
    box = (10, 10, 50, 50, 0.9)
    extra = compare_detections(_dets(), _dets(box))
    assert not extra["ok"]
    assert extra["problems"] == ["onnxruntime finds 1 detections where PyTorch finds none"]
    lost = compare_detections(_dets(box), _dets())
    assert not lost["ok"] and "have no onnxruntime twin" in lost["problems"][0]
    score = compare_detections(_dets(box), _dets((10, 10, 50, 50, 0.8)))
    assert not score["ok"] and score["problems"] == ["max |score diff| 1.00e-01 > 1e-03"]
    text = _format_check({**score, "image": "a.jpg", "input_shape": [1, 3, 32, 32]})
    assert "MISMATCH: max |score diff|" in text
    assert compare_detections(_dets(box), _dets(box))["ok"]


def test_segmentation_mismatch_names_the_agreement():
    ref = {"output": np.zeros((1, 1, 8, 8), np.int64)}
    got = {"output": np.ones((1, 1, 8, 8), np.int64)}
    result = compare_segmentation(ref, got)
    assert not result["ok"] and result["problems"][0].startswith("label maps agree on 0.000% of pixels")
    assert compare_segmentation(ref, ref)["ok"]
