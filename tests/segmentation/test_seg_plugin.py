"""mmseg_custom's own pieces: registrations, the NYU-Depth-V2 and Mapillary->Cityscapes
datasets (on tiny files written here), demo palettes and the aug-test pipeline builder."""

from __future__ import annotations

from pathlib import Path

import mmseg_custom
import numpy as np
import pytest
from mmseg_custom.datasets import MAPILLARY_TO_CITYSCAPES, NYU40_CLASSES, mapillary_to_cityscapes_label_map
from mmseg_custom.palettes import palette_meta
from mmseg_custom.tta import build_tta_pipeline
from PIL import Image

LOAD = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


@pytest.fixture(autouse=True)
def _mmseg_scope() -> None:
    # pipelines name mmseg transforms (LoadAnnotations, PackSegInputs), as in configs
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")


def _write_pair(root: Path, img_dir: str, ann_dir: str, stem: str, labels: np.ndarray,
                img_suffix: str) -> None:
    (root / img_dir).mkdir(parents=True, exist_ok=True)
    (root / ann_dir).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*labels.shape, 3), 128, np.uint8)).save(root / img_dir / f"{stem}{img_suffix}")
    Image.fromarray(labels.astype(np.uint8)).save(root / ann_dir / f"{stem}.png")


def test_registered_in_mmseg_scope() -> None:
    from mmseg.registry import DATASETS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    from dense_common import CustomLayerDecayOptimizerConstructor, InternImageBackbone

    assert MODELS.get("InternImage") is InternImageBackbone
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("CustomLayerDecayOptimizerConstructor") is \
        CustomLayerDecayOptimizerConstructor
    assert DATASETS.get("NYUDepthV2Dataset") is mmseg_custom.NYUDepthV2Dataset
    assert DATASETS.get("MapillaryCityscapesDataset") is mmseg_custom.MapillaryCityscapesDataset


def test_nyu_depth_v2_split_file_and_zero_label(tmp_path: Path) -> None:
    from mmseg.registry import DATASETS

    labels = np.tile(np.arange(41, dtype=np.uint8), (2, 1))  # 0 (unlabelled) .. 40
    for stem in ("0001", "0002", "0003"):
        _write_pair(tmp_path, "image", "label40", stem, labels, ".png")
    (tmp_path / "train.txt").write_text("0001\n0003\n")
    dataset = DATASETS.build(dict(type="NYUDepthV2Dataset", data_root=str(tmp_path), ann_file="train.txt",
                                  data_prefix=dict(img_path="image", seg_map_path="label40"),
                                  pipeline=[LOAD[0], dict(type="LoadAnnotations", reduce_zero_label=True),
                                            LOAD[2]]))
    assert len(dataset) == 2  # only the split's files
    assert dataset.metainfo["classes"] == NYU40_CLASSES and len(NYU40_CLASSES) == 40
    assert len(dataset.metainfo["palette"]) == 40
    sample = dataset[1]["data_samples"]
    assert Path(sample.img_path).name == "0003.png"
    gt = sample.gt_sem_seg.data.numpy()[0]
    assert gt[0, 0] == 255 and gt[0, 1] == 0 and gt[0, -1] == 39  # 0 -> ignored, k -> k - 1


def test_mapillary_labels_become_cityscapes_train_ids(tmp_path: Path) -> None:
    from mmseg.registry import DATASETS

    # road, lane marking, curb, sidewalk, person, bicyclist, car, bird, ego vehicle, unlabeled
    mapillary = np.tile(np.array([13, 24, 2, 15, 19, 20, 55, 0, 64, 65], np.uint8), (2, 1))
    _write_pair(tmp_path, "training/images", "training/labels", "a", mapillary, ".jpg")
    dataset = DATASETS.build(dict(type="MapillaryCityscapesDataset", data_root=str(tmp_path),
                                  data_prefix=dict(img_path="training/images",
                                                   seg_map_path="training/labels"),
                                  pipeline=LOAD))
    assert len(dataset.metainfo["classes"]) == 19 and dataset.metainfo["classes"][0] == "road"
    gt = dataset[0]["data_samples"].gt_sem_seg.data.numpy()[0, 0]
    assert gt.tolist() == [0, 0, 1, 1, 11, 12, 13, 255, 255, 255]


def test_mapillary_map_is_a_partition() -> None:
    grouped = [i for ids in MAPILLARY_TO_CITYSCAPES for i in ids]
    assert len(MAPILLARY_TO_CITYSCAPES) == 19 and len(grouped) == len(set(grouped))
    label_map = mapillary_to_cityscapes_label_map()
    assert sorted(label_map) == list(range(66))
    assert sum(v != 255 for v in label_map.values()) == len(grouped)


@pytest.mark.parametrize("name, count, first", [("ade20k", 150, "wall"), ("cityscapes", 19, "road"),
                                                ("cocostuff", 171, "person")])
def test_palettes(name: str, count: int, first: str) -> None:
    meta = palette_meta(name)
    assert len(meta["classes"]) == len(meta["palette"]) == count and meta["classes"][0] == first
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta["palette"])


def test_unknown_palette_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown palette 'voc'.*ade20k, cityscapes, cocostuff"):
        palette_meta("voc")


def test_tta_pipeline_scales_the_test_scale_and_flips() -> None:
    test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(2048, 512), keep_ratio=True),
                     dict(type="ResizeToMultiple", size_divisor=32), dict(type="LoadAnnotations"),
                     dict(type="PackSegInputs")]
    load, tta = build_tta_pipeline(test_pipeline)
    assert load == test_pipeline[0] and tta["type"] == "TestTimeAug"
    resizes, flips, *rest = tta["transforms"]
    assert [r["scale"] for r in resizes] == [(1024, 256), (1536, 384), (2048, 512), (2560, 640), (3072, 768),
                                             (3584, 896)]
    assert [f["prob"] for f in flips] == [0.0, 1.0]
    assert rest == [[step] for step in test_pipeline[2:]]
    assert test_pipeline[1]["scale"] == (2048, 512)  # the input is left alone


def test_tta_pipeline_needs_one_resize() -> None:
    with pytest.raises(ValueError, match="exactly one Resize"):
        build_tta_pipeline([dict(type="LoadImageFromFile"), dict(type="PackSegInputs")])
