"""CrowdHumanOdgtDataset parses the released .odgt format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

RECORDS = [
    {"ID": "273271,c9db000d5146c15", "gtboxes": [
        {"tag": "person", "fbox": [72, 202, 163, 503], "vbox": [72, 202, 163, 398],
         "hbox": [171, 208, 62, 83], "extra": {"box_id": 0, "occ": 0}, "head_attr": {"ignore": 0}},
        {"tag": "person", "fbox": [199, 180, 144, 499], "vbox": [199, 180, 144, 333],
         "hbox": [240, 190, 52, 60], "extra": {"box_id": 1, "occ": 1, "ignore": 1}},
        {"tag": "mask", "fbox": [10, 10, 30, 30], "vbox": [10, 10, 30, 30], "hbox": [10, 10, 30, 30],
         "extra": {"box_id": 2, "ignore": 1}},
    ]},
    {"ID": "only_crowd", "gtboxes": [
        {"tag": "mask", "fbox": [0, 0, 50, 50], "vbox": [0, 0, 50, 50], "hbox": [0, 0, 10, 10], "extra": {}},
    ]},
]


@pytest.fixture
def odgt(tmp_path):
    (tmp_path / "Images").mkdir()
    for record, size in zip(RECORDS, [(640, 480), (320, 200)]):
        image = Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8))
        image.save(tmp_path / "Images" / f"{record['ID']}.jpg")
    path = tmp_path / "annotation_train.odgt"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return tmp_path


def _dataset(root, **kwargs):
    from mmdet_custom import CrowdHumanOdgtDataset

    kwargs.setdefault("pipeline", [])
    return CrowdHumanOdgtDataset(data_root=str(root), ann_file="annotation_train.odgt",
                                 data_prefix=dict(img="Images/"), **kwargs)


def test_person_boxes_ignore_flags_and_sizes(odgt):
    dataset = _dataset(odgt, test_mode=True)
    assert dataset.metainfo["classes"] == ("person",) and len(dataset) == 2
    info = dataset.get_data_info(0)
    assert (info["height"], info["width"]) == (480, 640)  # read from the image header
    assert info["img_path"].endswith("Images/273271,c9db000d5146c15.jpg")
    boxes = [i["bbox"] for i in info["instances"]]
    assert boxes == [[72, 202, 235, 705], [199, 180, 343, 679], [10, 10, 40, 40]]
    assert [i["ignore_flag"] for i in info["instances"]] == [0, 1, 1]  # extra.ignore and 'mask' regions
    assert {i["bbox_label"] for i in info["instances"]} == {0}


def test_visible_boxes_and_empty_image_filtering(odgt):
    dataset = _dataset(odgt, box_type="vbox", filter_cfg=dict(filter_empty_gt=True, min_size=32))
    assert len(dataset) == 1  # the image with only an ignored crowd region has nothing to learn
    assert dataset.get_data_info(0)["instances"][0]["bbox"] == [72, 202, 235, 600]


def test_loads_into_mmdet_training_samples(odgt):
    from mmdet.utils import register_all_modules

    register_all_modules()
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                dict(type="PackDetInputs")]
    dataset = _dataset(odgt, pipeline=pipeline)
    sample = dataset[0]["data_samples"]
    assert sample.gt_instances.bboxes.shape == (1, 4)  # ignored boxes move to ignored_instances
    assert sample.ignored_instances.bboxes.shape == (2, 4)


def test_bad_records_are_reported(tmp_path):
    (tmp_path / "annotation_train.odgt").write_text('{"ID": "x"}\n')
    with pytest.raises(ValueError, match="gtboxes"):
        _dataset(tmp_path)
    (tmp_path / "annotation_train.odgt").write_text("not json\n")
    with pytest.raises(ValueError, match=":1: not a JSON record"):
        _dataset(tmp_path)
    with pytest.raises(ValueError, match="box_type"):
        _dataset(tmp_path, box_type="xbox")
