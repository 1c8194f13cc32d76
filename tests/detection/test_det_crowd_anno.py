"""detection/tools/create_crowd_anno.py turns the released CrowdHuman .odgt files into the
COCO-style json the published CrowdHuman config reads (and mmdet's CocoDataset loads)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import DETECTION, REPO, script_env
from mmengine.config import Config
from PIL import Image
from test_det_crowd_human import RECORDS

TOOL = str(DETECTION / "tools/create_crowd_anno.py")


def _crowdhuman(root):
    images = root / "CrowdHuman" / "Images"
    images.mkdir(parents=True)
    (root / "CrowdHuman" / "annotations").mkdir()
    for record, size in zip(RECORDS, [(640, 480), (320, 200)]):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(images / f"{record['ID']}.jpg")
    odgt = root / "CrowdHuman" / "annotations" / "annotation_val.odgt"
    odgt.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return root / "CrowdHuman"


def test_odgt_becomes_the_published_coco_json(tmp_path):
    data = _crowdhuman(tmp_path)
    proc = subprocess.run([sys.executable, TOOL, "--dataset", "CrowdHuman", "--dataset-split", "val",
                           "--data-root", str(tmp_path)],
                          cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    coco = json.loads((data / "annotations" / "annotation_val.json").read_text())
    assert coco["categories"] == [dict(supercategory="none", id=1, name="person")]
    assert [(i["id"], i["width"], i["height"]) for i in coco["images"]] == [(0, 640, 480), (1, 320, 200)]
    assert [(a["id"], a["image_id"], a["bbox"], a["iscrowd"]) for a in coco["annotations"]] == [
        (1, 0, [72, 202, 163, 503], 0),
        (2, 0, [199, 180, 144, 499], 1),  # extra.ignore
        (3, 0, [10, 10, 30, 30], 1),  # a 'mask' region
        (4, 1, [0, 0, 50, 50], 1),
    ]
    assert coco["annotations"][0]["area"] == 163 * 503

    # the published config reads it: CocoDataset over annotations/annotation_{split}.json
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(DETECTION / "configs/crowd_human/cascade_internimage_xl_fpn_3x_crowd_human.py"))
    dataset_cfg = cfg.val_dataloader.dataset
    assert dataset_cfg.ann_file == "annotations/annotation_val.json" and dataset_cfg.type == "CocoDataset"
    dataset = DATASETS.build(dict(dataset_cfg, data_root=str(data), pipeline=[]))
    info = dataset.get_data_info(0)
    assert len(dataset) == 2 and [i["ignore_flag"] for i in info["instances"]] == [0, 1, 1]
    assert cfg.val_evaluator.ann_file.endswith("annotations/annotation_val.json")


def test_missing_odgt_is_reported(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "--dataset-split", "train", "--data-root", str(tmp_path)],
                          cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "annotation_train.odgt' does not exist" in proc.stderr
