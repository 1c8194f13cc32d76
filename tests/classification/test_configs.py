"""The shipped yaml configs: each builds its variant (exact parameter count, on the meta
device) with the published recipe; BASE inheritance, bad keys and overrides."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
import torch

from classification.config import get_config, load_config_file
from classification.models import VARIANTS, build_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "classification" / "configs"
# (configs/accelerate holds launcher configs, not model configs: tests/classification/test_accelerate.py)
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "accelerate" not in p.relative_to(CONFIG_DIR).parts)
# the published-model configs (other yaml files, e.g. demos, are only checked to build)
PUBLISHED = re.compile(r"internimage_(t|s|b|l|xl|h|g)_(1k|22kto1k|22ktoinat18)_\d+")
MODEL_CONFIGS = [p for p in CONFIGS if "_base_" not in p.parts and PUBLISHED.fullmatch(p.stem)]

# model.md: parameters (millions, 1000-class head) and the width of the last feature
PARAMS_M = {"t": 29.92, "s": 50.08, "b": 97.46, "l": 223.33, "xl": 334.82, "h": 1089.64, "g": 3076.37}
HEAD_IN = {"t": 768, "s": 960, "b": 1344, "l": 1920, "xl": 2304, "h": 768, "g": 768}
DROP_PATH = {"t": 0.1, "s": 0.4, "b": 0.5}


def _variant(path: Path) -> str:
    return path.stem.split("_")[1]


def _size(path: Path) -> int:
    return int(re.search(r"_(\d+)$", path.stem).group(1))


def _rel(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


def test_expected_files_exist():
    names = {_rel(p) for p in MODEL_CONFIGS}
    main = {"internimage_t_1k_224.yaml", "internimage_s_1k_224.yaml", "internimage_b_1k_224.yaml",
            "internimage_l_22kto1k_384.yaml", "internimage_xl_22kto1k_384.yaml",
            "internimage_h_22kto1k_384.yaml", "internimage_h_22kto1k_640.yaml",
            "internimage_g_22kto1k_512.yaml"}
    expected = main | {f"without_lr_decay/{n}" for n in main} | {
        "inaturalist2018/internimage_h_22ktoinat18_384.yaml"}
    assert expected <= names
    assert len(MODEL_CONFIGS) == len(expected)


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_config_builds_its_model(path):
    config = load_config_file(str(path))
    with torch.device("meta"):
        model = build_model(config)
    # (the metadata embedding of MODEL.TYPE intern_image_meta is not in model.md's counts)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("meta_"))
    if "_base_" in path.parts:  # recipe fragments: the default (T-sized) architecture
        assert round(params / 1e6, 2) == PARAMS_M["t"]
        return
    assert config.MODEL.NAME == path.stem
    assert model.num_classes == config.MODEL.NUM_CLASSES
    if path not in MODEL_CONFIGS:
        return
    variant = _variant(path)
    classes = config.MODEL.NUM_CLASSES
    # the parameter count with a 1000-class head, as model.md lists it
    params_1k = params - (classes - 1000) * (HEAD_IN[variant] + 1)
    assert round(params_1k / 1e6, 2) == PARAMS_M[variant]
    assert config.MODEL.NAME == path.stem
    assert config.DATA.IMG_SIZE == _size(path)
    assert model.head.out_features == classes
    assert model.with_cp == config.TRAIN.USE_CHECKPOINT


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_rel)
def test_architecture_matches_variant(path):
    c = load_config_file(str(path)).MODEL.INTERN_IMAGE
    v = VARIANTS[_variant(path)]
    assert c.CHANNELS == v["channels"]
    assert tuple(c.DEPTHS) == tuple(v["depths"]) and tuple(c.GROUPS) == tuple(v["groups"])
    assert c.LAYER_SCALE == v["layer_scale"] and c.OFFSET_SCALE == v["offset_scale"]
    assert c.POST_NORM == v["post_norm"] and c.MLP_RATIO == 4.0
    assert c.DW_KERNEL_SIZE == v.get("dw_kernel_size")
    assert c.RES_POST_NORM == v.get("res_post_norm", False)
    assert c.CENTER_FEATURE_SCALE == v.get("center_feature_scale", False)
    assert c.USE_CLIP_PROJECTOR == v.get("use_clip_projector", False)
    assert c.LEVEL2_POST_NORM == v.get("level2_post_norm", False)
    ids = v.get("level2_post_norm_block_ids")
    assert (tuple(c.LEVEL2_POST_NORM_BLOCK_IDS) if ids else None) == (tuple(ids) if ids else None)
    assert c.CORE_OP == "DCNv3" and c.REMOVE_CENTER is False


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_rel)
def test_published_recipe(path):
    # (every key against the published values: tests/classification/test_published_recipes.py)
    config = load_config_file(str(path))
    train, variant = config.TRAIN, _variant(path)
    inat = "inaturalist2018" in path.parts
    assert train.WEIGHT_DECAY == 0.05 and config.TEST.CROP is True
    if variant in DROP_PATH:
        assert train.EMA.ENABLE is True and train.EMA.DECAY == 0.9999
        assert config.AUG.MIXUP == 0.8 and config.AUG.CUTMIX == 1.0
        assert train.EPOCHS == 300 and train.BASE_LR == 5e-4 and train.WARMUP_EPOCHS == 20
        assert config.MODEL.DROP_PATH_RATE == DROP_PATH[variant]
        assert config.MODEL.LABEL_SMOOTHING == 0.1
        assert train.LR_LAYER_DECAY is False
    elif inat:  # 100 epochs, drop path 0.6, label smoothing 0.3, no EMA, no mixup, new head
        assert train.EPOCHS == 100 and train.BASE_LR == 2e-5 and config.MODEL.DROP_PATH_RATE == 0.6
        assert train.EMA.ENABLE is False and train.RAND_INIT_FT_HEAD is True
        assert config.AUG.MIXUP == 0.0 and config.AUG.CUTMIX == 0.0 and config.AUG.REPROB == 0.0
        assert config.MODEL.LABEL_SMOOTHING == 0.3 and train.LR_LAYER_DECAY is False
    else:  # 22K -> 1K fine-tunes: no mixup, cutmix or random erasing
        assert train.EMA.ENABLE is True
        assert config.AUG.MIXUP == 0.0 and config.AUG.CUTMIX == 0.0 and config.AUG.REPROB == 0.0
        assert train.EPOCHS == 20 and train.BASE_LR == 2e-5
        decay = "without_lr_decay" not in path.parts
        assert train.LR_LAYER_DECAY is decay
        assert train.LR_LAYER_DECAY_RATIO == (0.9 if decay else 0.875)  # unused without decay
        assert train.OPTIMIZER.DCN_LR_MUL == 0.1
        assert config.MODEL.LABEL_SMOOTHING == 0.3
        assert train.USE_CHECKPOINT is True
        assert config.MODEL.PRETRAINED.startswith("pretrained/internimage_")
    assert config.DATA.DATASET == ("inat18" if inat else "imagenet")
    # 1000 in the yaml for iNat18 too: the dataset gives the model its 8142 classes at run time
    assert config.MODEL.NUM_CLASSES == 1000


def test_without_lr_decay_differs_only_in_layer_decay():
    for path in (CONFIG_DIR / "without_lr_decay").glob("*.yaml"):
        a = load_config_file(str(path))
        b = load_config_file(str(CONFIG_DIR / path.name))
        b.defrost()
        b.TRAIN.LR_LAYER_DECAY = False
        b.TRAIN.LR_LAYER_DECAY_RATIO = a.TRAIN.LR_LAYER_DECAY_RATIO  # unused without decay
        b.BASE = a.BASE  # the file names differ, the merged values must not
        assert a == b, path.name


def test_base_inheritance(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "root.yaml").write_text(
        "TRAIN:\n  EPOCHS: 7\n  BASE_LR: 1.0e-3\nDATA:\n  IMG_SIZE: 96\n")
    (tmp_path / "common" / "mid.yaml").write_text(
        "BASE: ['root.yaml']\nTRAIN:\n  BASE_LR: 2.0e-3\nMODEL:\n  NUM_CLASSES: 10\n")
    child = tmp_path / "child.yaml"
    child.write_text("BASE: ['common/mid.yaml']\nDATA:\n  IMG_SIZE: 128\nMODEL:\n  NAME: child\n")
    config = load_config_file(str(child))
    assert config.TRAIN.EPOCHS == 7  # from the root
    assert config.TRAIN.BASE_LR == 2e-3  # the middle file overrides the root
    assert config.MODEL.NUM_CLASSES == 10
    assert config.DATA.IMG_SIZE == 128  # the child overrides everything
    assert config.TRAIN.WARMUP_EPOCHS == 20  # untouched default


def test_base_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("BASE: ['b.yaml']\n")
    (tmp_path / "b.yaml").write_text("BASE: ['a.yaml']\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config_file(str(tmp_path / "a.yaml"))


def test_bad_key_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  INTERN_IMAGE:\n    CHANNEL: 64\n")
    with pytest.raises(KeyError) as info:
        load_config_file(str(path))
    assert str(path) in str(info.value) and "CHANNEL" in str(info.value)
    base_typo = tmp_path / "child.yaml"
    base_typo.write_text("BASE: ['typo.yaml']\n")
    with pytest.raises(KeyError, match="typo.yaml"):
        load_config_file(str(base_typo))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config_file(str(tmp_path / "nowhere.yaml"))


def test_opts_override():
    path = CONFIG_DIR / "internimage_t_1k_224.yaml"
    config = load_config_file(str(path), ["TRAIN.EPOCHS", "5", "MODEL.INTERN_IMAGE.CORE_OP", "DCNv3_pytorch",
                                          "MODEL.NUM_CLASSES", "10"])
    assert config.TRAIN.EPOCHS == 5 and config.MODEL.NUM_CLASSES == 10
    with torch.device("meta"):
        model = build_model(config)
    assert model.core_op == "DCNv3_pytorch" and model.head.out_features == 10
    with pytest.raises((KeyError, AssertionError), match="TRAIN.EPOCH"):  # yacs names the key
        load_config_file(str(path), ["TRAIN.EPOCH", "5"])


def test_get_config_from_args(tmp_path):
    path = CONFIG_DIR / "without_lr_decay" / "internimage_l_22kto1k_384.yaml"
    args = argparse.Namespace(cfg=str(path), opts=["TRAIN.EPOCHS", "3"], batch_size=16, output=str(tmp_path),
                              tag="run1", use_checkpoint=False)
    config = get_config(args)
    assert config.TRAIN.EPOCHS == 3 and config.DATA.BATCH_SIZE == 16
    # <output>/<cfg stem>/ as published: the tag is no folder level
    assert config.OUTPUT == os.path.join(str(tmp_path), "internimage_l_22kto1k_384")
    assert config.TRAIN.LR_LAYER_DECAY is False and config.TRAIN.USE_CHECKPOINT is True
