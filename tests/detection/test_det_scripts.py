"""The detection scripts' command lines: bad input gives a clear message, and
get_flops.py counts the DCNv3 core on top of mmengine's operator count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import DETECTION, load_script, script_env

T_CONFIG = str(DETECTION / "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py")


def test_a_missing_config_is_reported_without_a_traceback():
    proc = subprocess.run([sys.executable, str(DETECTION / "train.py"), "missing_config.py"],
                          env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: config file 'missing_config.py' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script, args, message", [
    ("test", [T_CONFIG, "/nonexistent/model.pth"], "checkpoint '/nonexistent/model.pth' does not exist"),
    ("test", [T_CONFIG, "model.pth", "--out", "results.json"], "--out must name a .pkl file"),
    ("test", [T_CONFIG, T_CONFIG, "--tta"], "--tta needs tta_model and tta_pipeline in the config"),
    ("train", [T_CONFIG, "--resume", "/nonexistent/ep1.pth"], "checkpoint '/nonexistent/ep1.pth' does not"),
    ("train", [T_CONFIG, "--auto-scale-lr", "--cfg-options", "auto_scale_lr=None"], "--auto-scale-lr needs"),
    ("train", [str(DETECTION / "configs")], f"config file '{DETECTION / 'configs'}' is a directory"),
    ("image_demo", ["/nonexistent.jpg", T_CONFIG, "x.pth"], "image '/nonexistent.jpg' does not exist"),
    ("image_demo", [T_CONFIG, T_CONFIG, "x.pth", "--score-thr", "2"], "--score-thr must lie in [0, 1]"),
    ("get_flops", [T_CONFIG, "--shape", "8", "8"], "--shape must be at least 32x32"),
])
def test_bad_input_is_reported(script, args, message):
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main(args)
    assert message in str(exit_info.value)


def test_train_options_reach_the_config(tmp_path):
    train = load_script("train")
    cfg = train.build_cfg(train.parse_args([T_CONFIG, "--amp", "--auto-scale-lr", "--resume",
                                            "--cfg-options", "train_cfg.max_epochs=2"]))
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.auto_scale_lr.enable
    assert cfg.resume is True and cfg.load_from is None and cfg.train_cfg.max_epochs == 2
    assert cfg.work_dir.endswith("work_dirs/mask_rcnn_internimage_t_fpn_1x_coco")


def test_test_tta_and_show_dir_reach_the_config(tmp_path):
    test = load_script("test")
    config = str(DETECTION / "configs/coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py")
    cfg = test.build_cfg(test.parse_args([config, config, "--tta", "--show-dir", "shown"]))
    assert cfg.model.type == "DetTTAModel" and cfg.model.module.type == "CBDINO"
    assert cfg.test_dataloader.dataset.pipeline[1].type == "TestTimeAug"
    assert cfg.default_hooks.visualization.draw
    assert cfg.default_hooks.visualization.test_out_dir == os.path.abspath("shown")


@pytest.mark.slow
def test_get_flops_adds_the_dcnv3_core():
    result = load_script("get_flops").count(T_CONFIG, 128, 192)
    # per level: 5 FLOPs x H x W x 9 points x C, over 4, 4, 18, 4 blocks at strides 4..32
    expected = sum(5 * (128 // s) * (192 // s) * 9 * c * d
                   for s, c, d in [(4, 64, 4), (8, 128, 4), (16, 256, 18), (32, 512, 4)])
    assert result["dcnv3_flops"] == expected
    assert result["flops"] > 10 * expected
    assert 45e6 < result["params"] < 52e6  # published: 49M
