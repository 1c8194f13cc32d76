"""The published (mmseg 0.x) flags of segmentation test.py / train.py / get_flops.py map
onto mmengine's mechanisms: each one changes the config the way the old flag behaved
(end-to-end runs: test_seg_scripts.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from seg_testutils import CONFIGS, SEG, T_ADE

CITYSCAPES = CONFIGS / "cityscapes/upernet_internimage_t_512x1024_160k_cityscapes.py"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"seg_script_{name}", SEG / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _test_cfg(*flags: str, config=T_ADE):
    test = _script("test")
    return test.build_cfg(test.parse_args([str(config), str(config), *flags]))


def _train_cfg(*flags: str):
    train = _script("train")
    return train.build_cfg(train.parse_args([str(T_ADE), *flags]))


def test_eval_picks_iou_metrics():
    assert list(_test_cfg("--eval", "mIoU").test_evaluator.iou_metrics) == ["mIoU"]
    assert list(_test_cfg("--eval", "mIoU", "mDice").test_evaluator.iou_metrics) == ["mIoU", "mDice"]


def test_format_only_writes_label_maps_or_the_cityscapes_submission():
    evaluator = _test_cfg("--format-only", "--eval-options", "imgfile_prefix=preds").test_evaluator
    assert evaluator.format_only is True and evaluator.output_dir == "preds"
    evaluator = _test_cfg("--format-only", "--work-dir", "wd", config=CITYSCAPES).test_evaluator
    assert evaluator == dict(type="CityscapesSubmissionMetric", output_dir="wd/format_results")
    with pytest.raises(SystemExit, match="not both"):
        _test_cfg("--format-only", "--eval", "mIoU")


def test_cityscapes_submission_writes_label_ids(tmp_path):
    import mmseg_custom  # noqa: F401
    from mmengine.structures import PixelData
    from mmseg.registry import METRICS
    from mmseg.structures import SegDataSample
    from PIL import Image

    metric = METRICS.build(dict(type="CityscapesSubmissionMetric", output_dir=str(tmp_path)))
    sample = SegDataSample(metainfo=dict(img_path="x/aachen_000000_000019_leftImg8bit.png"))
    sample.pred_sem_seg = PixelData(data=torch.tensor([[[0, 1, 18, 120]]]))  # 120: a 150-head extra logit
    metric.process({}, [sample.to_dict()])
    written = np.asarray(Image.open(tmp_path / "aachen_000000_000019_leftImg8bit.png"))
    assert written.tolist() == [[7, 8, 33, 0]]  # road, sidewalk, bicycle, unlabeled
    assert metric.compute_metrics(metric.results) == {"files_written": 1.0}


def test_eval_options_options_show_and_fuse_conv_bn():
    assert _test_cfg("--eval-options", "nan_to_num=0").test_evaluator.nan_to_num == 0
    assert _test_cfg("--options", "test_dataloader.batch_size=2").test_dataloader.batch_size == 2
    hook = _test_cfg("--show").default_hooks.visualization
    assert hook.draw and hook.show
    assert dict(type="FuseConvBNHook") in _test_cfg("--fuse-conv-bn").custom_hooks


def test_train_flags():
    cfg = _train_cfg("--load-from", str(T_ADE))
    assert cfg.load_from == str(T_ADE) and cfg.resume is False
    cfg = _train_cfg("--resume-from", str(T_ADE))
    assert cfg.resume is True and cfg.load_from == str(T_ADE)
    assert _train_cfg("--auto-resume").resume is True
    cfg = _train_cfg("--no-validate", "--seed", "3", "--deterministic", "--options", "train_cfg.max_iters=9")
    assert cfg.val_dataloader is None and cfg.val_cfg is None and cfg.val_evaluator is None
    assert cfg.randomness == dict(seed=3, deterministic=True) and cfg.train_cfg.max_iters == 9
    with pytest.raises(SystemExit, match="not both"):
        _train_cfg("--load-from", str(T_ADE), "--auto-resume")


def test_get_flops_takes_one_or_two_shape_values():
    flops = _script("get_flops")
    assert flops.parse_args([str(T_ADE), "--shape", "640"]).shape == [640, 640]
    assert flops.parse_args([str(T_ADE), "--shape", "512", "1024"]).shape == [512, 1024]
