"""End to end through the user-facing scripts, on real photos: Mask R-CNN InternImage-T
(the published config, no pretrained download) trains on a tiny COCO set with its loss
going down, saves checkpoints, resumes through ``train.py --resume``, ``test.py`` reports
COCO box and mask metrics and ``image_demo.py`` writes an annotated image."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DETECTION, REPO, script_env
from tiny_det_data import CLASSES, write_tiny_coco

from classification.models.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow
CONFIG = DETECTION / "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"
EPOCHS = 4  # 3 images, batch 1: 12 iterations


def _tiny_config(root: Path, ann: Path) -> Path:
    """The published T config pointed at the tiny set: small images, 3 classes, every
    iteration logged, constant lr (the 500-iteration warmup would keep it near 0)."""
    text = f"""
_base_ = [{str(CONFIG)!r}]
data_root = {str(root)!r}
metainfo = dict(classes={CLASSES!r})
# fewer proposals/RoIs keep the CPU iterations short; score_thr 0 so that a barely
# trained model still predicts something to evaluate and draw
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(score_thr=0.0, max_per_img=20)))
scale = (128, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(data_root=data_root, metainfo=metainfo, ann_file={ann.name!r}, data_prefix=dict(img='images/'))
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(**dataset, filter_cfg=dict(filter_empty_gt=True, min_size=8),
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={str(ann)!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={EPOCHS}, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(save_best=None))
randomness = dict(seed=0)
"""
    path = root / "mask_rcnn_internimage_t_tiny.py"
    path.write_text(text)
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=script_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _losses(work_dir: Path) -> dict[int, float]:
    """step -> total loss, from every run's scalars.json in the work dir."""
    losses = {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record:
                losses[record["step"]] = record["loss"]
    return losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_coco")
    config = _tiny_config(root, write_tiny_coco(root, width=128))
    work_dir = root / "work"
    _run(str(DETECTION / "train.py"), str(config), "--work-dir", str(work_dir))
    return config, work_dir


def test_training_lowers_the_loss_and_saves_checkpoints(trained):
    _, work_dir = trained
    losses = _losses(work_dir)
    steps = sorted(losses)
    assert len(steps) == 3 * EPOCHS, losses
    first, last = [losses[s] for s in steps[:3]], [losses[s] for s in steps[-3:]]
    assert sum(last) < 0.8 * sum(first), losses  # the same 3 photos, seen 4 times
    # mmengine's own file reads back through the repository's safe reader, without the opt-in
    checkpoint = read_checkpoint(work_dir / f"epoch_{EPOCHS}.pth", trust=False)
    assert checkpoint["meta"]["epoch"] == EPOCHS
    assert any(k.startswith("backbone.levels.2.blocks.17.gamma1") for k in checkpoint["state_dict"])


def test_resume_continues_from_the_checkpoint(trained):
    config, work_dir = trained
    before = set(_losses(work_dir))
    proc = _run(str(DETECTION / "train.py"), str(config), "--work-dir", str(work_dir),
                "--resume", str(work_dir / f"epoch_{EPOCHS}.pth"),
                "--cfg-options", f"train_cfg.max_epochs={EPOCHS + 1}")
    assert f"resumed epoch: {EPOCHS}" in proc.stdout + proc.stderr
    new_steps = set(_losses(work_dir)) - before
    assert sorted(new_steps) == list(range(3 * EPOCHS + 1, 3 * EPOCHS + 4))  # one more epoch, not a restart
    assert (work_dir / f"epoch_{EPOCHS + 1}.pth").is_file()


def test_test_script_reports_coco_box_and_mask_metrics(trained, tmp_path):
    config, work_dir = trained
    out = tmp_path / "predictions.pkl"
    proc = _run(str(DETECTION / "test.py"), str(config), str(work_dir / f"epoch_{EPOCHS}.pth"),
                "--work-dir", str(tmp_path / "eval"), "--out", str(out))
    text = proc.stdout + proc.stderr
    for metric in ("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50", "coco/segm_mAP_50"):
        assert metric in text
    with open(out, "rb") as f:
        predictions = pickle.load(f)
    assert len(predictions) == 3 and "masks" in predictions[0]["pred_instances"]


def test_image_demo_writes_an_annotated_image(trained, tmp_path):
    """``--out`` is a folder (the drawing is OUT/<image name>), ``--palette`` picks the colours."""
    from PIL import Image

    config, work_dir = trained
    image = config.parent / "images" / "chelsea.jpg"
    checkpoint = str(work_dir / f"epoch_{EPOCHS}.pth")
    outs = {}
    for palette in ("voc", "citys"):
        _run(str(DETECTION / "image_demo.py"), str(image), str(config), checkpoint, "--out",
             str(tmp_path / palette), "--palette", palette, "--score-thr", "0.0")
        outs[palette] = tmp_path / palette / "chelsea.jpg"
    with Image.open(outs["voc"]) as drawn, Image.open(outs["citys"]) as other_palette, \
            Image.open(image) as original:
        assert drawn.size == other_palette.size == original.size
        # predictions at threshold 0 are drawn, in each palette's colours: the same boxes and
        # masks recolour a visible share of the pixels (JPEG noise alone stays below 30 levels)
        recoloured = [max(abs(a - b) for a, b in zip(p, q)) > 30
                      for p, q in zip(drawn.getdata(), other_palette.getdata())]
        assert sum(recoloured) > 0.01 * len(recoloured), f"{sum(recoloured)} of {len(recoloured)} pixels"


def test_format_only_writes_the_coco_result_files(trained, tmp_path):
    config, work_dir = trained
    prefix = tmp_path / "submission" / "results"
    proc = _run(str(DETECTION / "test.py"), str(config), str(work_dir / f"epoch_{EPOCHS}.pth"),
                "--work-dir", str(tmp_path / "eval"), "--format-only", "--eval-options",
                f"jsonfile_prefix={prefix}")
    assert "coco/bbox_mAP" not in proc.stdout + proc.stderr  # nothing evaluated
    for kind in ("bbox", "segm"):
        results = json.loads(Path(f"{prefix}.{kind}.json").read_text())
        assert {r["image_id"] for r in results} == {1, 2, 3}
        assert all(("segmentation" in r) == (kind == "segm") for r in results)


def _published_commands(readme: Path) -> list[list[str]]:
    """The ``# tested`` lines of the README's published-commands block, split into words."""
    import shlex

    text = readme.read_text()
    block = text.split("<!-- published-commands -->")[1].split("<!-- /published-commands -->")[0]
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.endswith("# tested")]


def test_readme_commands_run_as_written(trained, tmp_path):
    """The published README's evaluation command, as detection/README.md prints it, with the
    tiny config and checkpoint in place of the COCO ones: every flag as written."""
    config, work_dir = trained
    commands = _published_commands(REPO / "detection" / "README.md")
    assert commands and all(c[0] == "python" for c in commands)
    substitutions = {"detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py": str(config),
                     "pretrained/mask_rcnn_internimage_t_fpn_1x_coco.pth":
                         str(work_dir / f"epoch_{EPOCHS}.pth")}
    env = dict(script_env(), INTERNIMAGE_OUTPUT=str(tmp_path / "output"))  # the default work dir
    for words in commands:
        args = [substitutions.get(w, w) for w in words[1:]]
        assert args[0] == "detection/test.py" and args[-3:] == ["--eval", "bbox", "segm"]
        proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        text = proc.stdout + proc.stderr
        assert "coco/bbox_mAP" in text and "coco/segm_mAP" in text
