"""The published (mmdet 2) command-line flags of test.py / train.py / get_flops.py map
onto mmengine's mechanisms: each one changes the config (or the process) the way the
old flag behaved; the end-to-end runs are in test_det_train_pipeline.py."""

from __future__ import annotations

import pytest
import torch
from conftest import DETECTION, load_script

T_CONFIG = str(DETECTION / "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py")
VOC_CONFIG = str(DETECTION / "configs/voc/dino_4scale_cbinternimage_h_objects365_voc07.py")


def _test_cfg(*flags: str, config: str = T_CONFIG):
    test = load_script("test")
    return test.build_cfg(test.parse_args([config, config, *flags]))


def _train_cfg(*flags: str):
    train = load_script("train")
    return train.build_cfg(train.parse_args([T_CONFIG, *flags]))


def test_eval_picks_the_evaluator_metrics():
    assert _test_cfg("--eval", "bbox", "segm").test_evaluator.metric == ["bbox", "segm"]
    assert _test_cfg("--eval", "bbox").test_evaluator.metric == "bbox"
    assert _test_cfg("--eval", "mAP", config=VOC_CONFIG).test_evaluator.metric == "mAP"


def test_format_only_writes_results_under_the_jsonfile_prefix():
    cfg = _test_cfg("--format-only", "--eval-options", "jsonfile_prefix=work_dirs/coco_test")
    assert cfg.test_evaluator.format_only is True
    assert cfg.test_evaluator.outfile_prefix == "work_dirs/coco_test"
    default = _test_cfg("--format-only", "--work-dir", "wd")
    assert default.test_evaluator.outfile_prefix == "wd/results"


def test_eval_options_and_their_published_alias_options():
    assert _test_cfg("--eval-options", "classwise=True").test_evaluator.classwise is True
    assert _test_cfg("--options", "classwise=True").test_evaluator.classwise is True
    with pytest.raises(SystemExit, match="has no argument 'no_such_argument'"):
        _test_cfg("--eval-options", "no_such_argument=1")
    with pytest.raises(SystemExit, match="not both"):
        _test_cfg("--eval-options", "classwise=True", "--options", "classwise=False")


def test_show_and_show_score_thr_drive_the_visualization_hook():
    hook = _test_cfg("--show", "--show-score-thr", "0.6").default_hooks.visualization
    assert hook.draw and hook.show and hook.score_thr == 0.6
    hook = _test_cfg("--show-dir", "shown").default_hooks.visualization
    assert hook.draw and not hook.get("show", False) and hook.test_out_dir.endswith("/shown")
    with pytest.raises(SystemExit, match="--show-score-thr applies to drawn predictions"):
        _test_cfg("--show-score-thr", "0.5")


def test_fuse_conv_bn_adds_the_hook_which_folds_batchnorms():
    from mmengine.registry import HOOKS
    from torch import nn

    cfg = _test_cfg("--fuse-conv-bn")
    assert dict(type="FuseConvBNHook") in cfg.custom_hooks
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    runner = type("Runner", (), {"model": model})()
    HOOKS.build(dict(type="FuseConvBNHook")).before_test(runner)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_train_resume_flags():
    cfg = _train_cfg("--resume-from", T_CONFIG)
    assert cfg.resume is True and cfg.load_from == T_CONFIG
    cfg = _train_cfg("--auto-resume")
    assert cfg.resume is True and cfg.load_from is None
    with pytest.raises(SystemExit, match="give one of --resume, --auto-resume"):
        _train_cfg("--resume", "--auto-resume")


def test_train_no_validate_seed_and_determinism():
    cfg = _train_cfg("--no-validate", "--seed", "7", "--diff-seed", "--deterministic")
    assert cfg.val_dataloader is None and cfg.val_cfg is None and cfg.val_evaluator is None
    assert cfg.default_hooks.checkpoint.save_best is None
    assert cfg.randomness == dict(seed=7, diff_rank_seed=True, deterministic=True)
    # --deterministic alone (the published dist_train.sh line): a random seed, and the dict
    # still fits mmengine's Runner.set_randomness, which requires `seed`
    import inspect

    from mmengine.runner import Runner

    alone = _train_cfg("--deterministic").randomness
    assert alone == dict(seed=None, deterministic=True)
    inspect.signature(Runner.set_randomness).bind(object(), **alone)
    assert _train_cfg("--options", "train_cfg.max_epochs=3").train_cfg.max_epochs == 3


def test_gpu_id_makes_one_gpu_visible(monkeypatch, capsys):
    from dense_common.cli import select_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    import os

    assert select_gpu(3, None) == 3 and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert select_gpu(None, [5, 6]) == 5 and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert "using the first, 5" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not both"):
        select_gpu(1, [2])


def test_get_flops_shape_and_size_divisor():
    flops = load_script("get_flops")
    args = flops.parse_args([T_CONFIG])
    assert args.shape == [800, 1280] and args.size_divisor == 32
    assert flops.padded_shape(801, 1000, 32) == (832, 1024)
    assert flops.padded_shape(801, 1000, -1) == (801, 1000)
    from dense_common.cli import parse_shape

    assert parse_shape([640]) == (640, 640) and parse_shape([480, 640]) == (480, 640)
    with pytest.raises(SystemExit, match="one or two values"):
        parse_shape([1, 2, 3])
