"""Every config under segmentation/configs loads, builds its segmentor (on the meta
device: H models have ~1B parameters) and its optimizer wrapper, and carries the
published backbone/optimizer settings; class counts match the datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from seg_testutils import CONFIGS

ALL = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)
HF = "https://huggingface.co/OpenGVLab/InternImage/resolve/main/"

# variant -> published backbone settings for dense prediction
BACKBONES = {
    "t": dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32], layer_scale=1.0, offset_scale=1.0,
              post_norm=False, drop_path_rate=0.2),
    "s": dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], layer_scale=1.0, offset_scale=1.0,
              post_norm=True, drop_path_rate=0.3),
    "b": dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56], layer_scale=1.0, offset_scale=1.0,
              post_norm=True, drop_path_rate=0.4),
    "l": dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80], layer_scale=1.0, offset_scale=2.0,
              post_norm=True, drop_path_rate=0.4),
    "xl": dict(channels=192, depths=[5, 5, 24, 5], groups=[12, 24, 48, 96], layer_scale=1.0,
               offset_scale=2.0, post_norm=True, drop_path_rate=0.4),
    "h": dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80], layer_scale=None, offset_scale=1.0,
              post_norm=False, drop_path_rate=0.5, dw_kernel_size=5, res_post_norm=True,
              level2_post_norm=True,
              level2_post_norm_block_ids=[5, 11, 17, 23, 29], center_feature_scale=True),
    "g": dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128], layer_scale=None,
              offset_scale=1.0, post_norm=True, drop_path_rate=0.5, dw_kernel_size=5, res_post_norm=False,
              level2_post_norm=True, level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47],
              center_feature_scale=True, with_cp=True),
}
PRETRAINED = {"t": "internimage_t_1k_224", "s": "internimage_s_1k_224", "b": "internimage_b_1k_224",
              "l": "internimage_l_22k_192to384", "xl": "internimage_xl_22k_192to384",
              "h": "internimage_h_jointto22k_384", "g": "internimage_g_pretrainto22k_384"}
# variant -> (lr, layer decay, gradient clipping) of the published UperNet/SegFormer configs
OPTIM = {"t": (6e-5, 1.0, False), "s": (6e-5, 1.0, False), "b": (6e-5, 1.0, False),
         "l": (2e-5, 0.94, True), "xl": (2e-5, 0.94, True), "h": (2e-5, 0.95, True),
         "g": (2e-5, 0.95, True)}
# published Mask2Former-H learning rates and clipping, by config name
MASK2FORMER = {
    "mask2former_internimage_h_896_80k_cocostuff2ade20k_ss": (1e-5, True),
    "mask2former_internimage_h_896_80k_cocostuff2ade20k_ms": (1e-5, True),
    "mask2former_internimage_h_1024x1024_80k_mapillary2cityscapes": (1e-5, True),
    "mask2former_internimage_h_1024x1024_80k_mapillary2cityscapes_ms": (1e-5, True),
    "mask2former_internimage_h_896x896_80k_mapillary": (2e-5, True),
    "mask2former_internimage_h_896_80k_cocostuff164k": (2e-5, False),
    "mask2former_internimage_h_896_80k_cocostuff164k_ss": (2e-5, True),
    "mask2former_internimage_h_512_40k_cocostuff164k_to_10k": (1e-5, False),
    "mask2former_internimage_h_480_40k_pascal_context_59": (2e-5, False),
    "mask2former_internimage_h_480_40k_nyu": (2e-5, False),
}
PUBLISHED_NAMES = [
    "ade20k/upernet_internimage_t_512_160k_ade20k", "ade20k/upernet_internimage_s_512_160k_ade20k",
    "ade20k/upernet_internimage_b_512_160k_ade20k", "ade20k/upernet_internimage_l_640_160k_ade20k",
    "ade20k/upernet_internimage_xl_640_160k_ade20k", "ade20k/upernet_internimage_h_896_160k_ade20k",
    "ade20k/upernet_internimage_g_896_160k_ade20k",
    *(f"cityscapes/upernet_internimage_{v}_512x1024_160k_cityscapes" for v in ("t", "s", "b", "l", "xl")),
    *(f"cityscapes/{h}_internimage_{v}_512x1024_160k_mapillary2cityscapes"
      for h in ("upernet", "segformer") for v in ("l", "xl")),
    *(f"mapillary/{h}_internimage_{v}_512x1024_80k_mapillary"
      for h in ("upernet", "segformer") for v in ("l", "xl")),
    *(f"{folder}/{name}" for name in MASK2FORMER for folder in
      ("ade20k", "cityscapes", "mapillary", "coco_stuff164k", "coco_stuff10k", "pascal_context",
       "nyu_depth_v2")
      if (CONFIGS / folder / f"{name}.py").is_file()),
]


def _variant(path: Path) -> str:
    return path.stem.split("_")[2]  # <head>_internimage_<variant>_...


def _crop(path: Path) -> tuple[int, int]:
    token = path.stem.split("_")[3]  # 512, 640, 896, 480 or 512x1024, 896x896, 1024x1024
    h, _, w = token.partition("x")
    return int(h), int(w or h)


def _dataset_classes(cfg: Config) -> int:
    import mmseg_custom  # noqa: F401 - registers the extra datasets
    from mmseg.registry import DATASETS

    dataset = cfg.test_dataloader.dataset
    return len(DATASETS.get(dataset.type).METAINFO["classes"])


def test_published_configs_are_all_here() -> None:
    names = {str(p.relative_to(CONFIGS).with_suffix("")) for p in ALL}
    assert len(PUBLISHED_NAMES) == 30
    assert set(PUBLISHED_NAMES) <= names


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_config_builds_with_published_settings(path: Path) -> None:
    cfg = Config.fromfile(str(path))
    assert "mmseg_custom" in cfg.custom_imports.imports
    init_default_scope("mmseg")
    variant = _variant(path)
    backbone = cfg.model.backbone
    assert backbone.type == "InternImage" and backbone.core_op == "DCNv3"
    for key, value in BACKBONES[variant].items():
        assert backbone[key] == value, key
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.mlp_ratio == 4.0

    # weights: ImageNet backbone from the HF repo, or a published dense checkpoint
    init = backbone.init_cfg
    if init is not None:
        assert init.checkpoint == f"{HF}{PRETRAINED[variant]}.pth"
    else:
        assert cfg.load_from.startswith(HF) and cfg.load_from.endswith(".pth")

    # the decoder predicts the dataset's classes, except the UperNet Cityscapes/Mapillary
    # heads: 150 outputs, the size of their published checkpoints
    classes = _dataset_classes(cfg)
    if path.stem.startswith("upernet") and path.parent.name in ("cityscapes", "mapillary"):
        assert classes == 19
        classes = 150
    assert cfg.model.decode_head.num_classes == classes
    if cfg.model.get("auxiliary_head"):
        assert cfg.model.auxiliary_head.num_classes == classes
        assert cfg.model.auxiliary_head.in_channels == 4 * backbone.channels
    channels = backbone.channels
    assert list(cfg.model.decode_head.in_channels) == [channels, 2 * channels, 4 * channels, 8 * channels]
    assert tuple(cfg.model.data_preprocessor.size) == _crop(path)

    # optimizer: AdamW, wd 0.05, layer decay over sum(depths), poly schedule after warm-up
    optim = cfg.optim_wrapper
    lr, decay, clip = OPTIM[variant]
    if path.stem in MASK2FORMER:
        lr, clip = MASK2FORMER[path.stem]
    assert optim.optimizer.type == "AdamW" and optim.optimizer.weight_decay == 0.05
    assert optim.optimizer.lr == pytest.approx(lr)
    assert optim.constructor == "CustomLayerDecayOptimizerConstructor"
    assert optim.paramwise_cfg.layer_decay_rate == decay
    assert optim.paramwise_cfg.num_layers == sum(backbone.depths)
    assert (optim.get("clip_grad") == dict(max_norm=0.1, norm_type=2)) if clip else not optim.get("clip_grad")
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 1.0, 0.0, cfg.train_cfg.max_iters)
    assert cfg.train_cfg.max_iters == int(path.stem.split("k_")[0].split("_")[-1]) * 1000

    import mmseg_custom  # noqa: F401
    from mmseg.registry import MODELS

    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == "InternImageBackbone"
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = wrapper.optimizer.param_groups
    # decay / no decay, and by layer id where the rate makes the lrs differ (T/S/B: rate 1.0)
    assert len(groups) > 2 if decay < 1.0 else len(groups) >= 2


def test_ms_configs_turn_on_aug_test() -> None:
    ms = [p for p in ALL if p.stem.endswith("_ms")]
    assert len(ms) == 2
    for path in ms:
        cfg = Config.fromfile(str(path))
        assert cfg.aug_test is True and 1.0 in cfg.aug_test_ratios
