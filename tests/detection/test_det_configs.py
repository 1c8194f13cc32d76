"""Every detection config loads, carries the published settings, and builds its model
(on the meta device: no memory, no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import DETECTION
from mmengine.config import Config

CONFIG_DIR = DETECTION / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.py") if "_base_" not in p.parts)
HF = "https://huggingface.co/OpenGVLab/InternImage/resolve/main/"

# Published backbone settings (channels, depths, groups, offset_scale, post_norm, layer_scale).
VARIANTS = {
    "t": (64, [4, 4, 18, 4], [4, 8, 16, 32], 1.0, False, 1.0),
    "s": (80, [4, 4, 21, 4], [5, 10, 20, 40], 1.0, True, 1.0),
    "b": (112, [4, 4, 21, 4], [7, 14, 28, 56], 1.0, True, 1.0),
    "l": (160, [5, 5, 22, 5], [10, 20, 40, 80], 2.0, True, 1.0),
    "xl": (192, [5, 5, 24, 5], [12, 24, 48, 96], 2.0, True, 1.0),
    "h": (320, [6, 6, 32, 6], [10, 20, 40, 80], 1.0, False, None),
    "g": (512, [2, 2, 48, 4], [16, 32, 64, 128], 1.0, True, None),
}
# Published run settings: variant, drop_path, pretrained file (None: from a detector),
# lr, weight decay, layer decay (None: no layer-wise decay), offset_lr_scale, epochs/iterations.
T1K, S1K, B1K = "internimage_t_1k_224", "internimage_s_1k_224", "internimage_b_1k_224"
L22K, XL22K = "internimage_l_22k_192to384", "internimage_xl_22k_192to384"
PUBLISHED = {
    "coco/mask_rcnn_internimage_t_fpn_1x_coco": ("t", 0.2, T1K, 1e-4, 0.05, 1.0, 1.0, 12),
    "coco/mask_rcnn_internimage_t_fpn_3x_coco": ("t", 0.2, T1K, 1e-4, 0.05, 1.0, 1.0, 36),
    "coco/mask_rcnn_internimage_t_fpn_1x_coco_with_dcnv4": ("t", 0.2, T1K, 1e-4, 0.05, 1.0, 1.0, 12),
    "coco/mask_rcnn_internimage_s_fpn_1x_coco": ("s", 0.3, S1K, 1e-4, 0.05, 1.0, 1.0, 12),
    "coco/mask_rcnn_internimage_s_fpn_3x_coco": ("s", 0.3, S1K, 1e-4, 0.05, 1.0, 1.0, 36),
    "coco/mask_rcnn_internimage_b_fpn_1x_coco": ("b", 0.4, B1K, 1e-4, 0.05, 1.0, 1.0, 12),
    "coco/mask_rcnn_internimage_b_fpn_3x_coco": ("b", 0.4, B1K, 1e-4, 0.05, 1.0, 1.0, 36),
    "coco/cascade_internimage_l_fpn_1x_coco": ("l", 0.4, L22K, 1e-4, 0.05, 0.94, 1.0, 12),
    "coco/cascade_internimage_l_fpn_3x_coco": ("l", 0.4, L22K, 2e-4, 0.05, 0.90, 0.01, 36),
    "coco/cascade_internimage_xl_fpn_1x_coco": ("xl", 0.4, XL22K, 1e-4, 0.05, 0.94, 1.0, 12),
    "coco/cascade_internimage_xl_fpn_3x_coco": ("xl", 0.6, XL22K, 2e-4, 0.05, 0.90, 0.01, 36),
    "coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr": ("t", 0.2, T1K, 1e-4, 1e-4, 0.9, 1.0, 12),
    "coco/dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr": ("l", 0.4, L22K, 1e-4, 0.05, None, None, 12),
    "coco/dino_4scale_internimage_l_1x_coco_layer_wise_lr": ("l", 0.4, L22K, 1e-4, 1e-4, 0.9, 1.0, 12),
    "coco/dino_4scale_internimage_h_objects365_coco_ss": ("h", 0.5, None, 1e-4, 1e-4, 0.94, 1e-3, 20000),
    "coco/dino_4scale_cbinternimage_h_objects365_coco_ss": ("h", 0.5, None, 1e-4, 1e-4, 0.94, 1e-3,
                                                            20000),
    "coco/dino_4scale_internimage_g_objects365_coco_ss": ("g", 0.5, None, 1e-4, 1e-4, 0.94, 1e-3, 20000),
    "crowd_human/cascade_internimage_xl_fpn_3x_crowd_human": ("xl", 0.4, XL22K, 1e-4, 1e-4, 0.94, 1.0, 36),
    "lvis/dino_4scale_cbinternimage_h_objects365_lvis_minival_ss": ("h", 0.5, None, 1e-4, 1e-4, 0.94, 1e-3,
                                                                    80000),
    "lvis/dino_4scale_cbinternimage_h_objects365_lvis_val_ss": ("h", 0.5, None, 1e-4, 1e-4, 0.94, 1e-3,
                                                                80000),
    "voc/dino_4scale_cbinternimage_h_objects365_voc07": ("h", 0.5, None, 5e-5, 1e-4, 0.94, 1e-3, 20000),
    "voc/dino_4scale_cbinternimage_h_objects365_voc12": ("h", 0.5, None, 5e-5, 1e-4, 0.94, 1e-3, 20000),
    "openimages/dino_4scale_cbinternimage_h_objects365_openimages_ss": ("h", 0.5, None, 1e-4, 1e-4, 0.94,
                                                                        1e-3, 100000),
}


def _name(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR).with_suffix(""))


def test_every_published_config_is_here():
    assert sorted(PUBLISHED) == sorted(_name(p) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_config_has_the_published_settings(path):
    variant, drop_path, pretrained, lr, wd, layer_decay, offset_lr_scale, length = PUBLISHED[_name(path)]
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ["mmdet_custom"] and not cfg.custom_imports.allow_failed_imports
    backbone = cfg.model.backbone
    channels, depths, groups, offset_scale, post_norm, layer_scale = VARIANTS[variant]
    assert (backbone.channels, list(backbone.depths), list(backbone.groups)) == (channels, depths, groups)
    assert (backbone.offset_scale, backbone.post_norm, backbone.layer_scale) == (offset_scale, post_norm,
                                                                                  layer_scale)
    assert backbone.mlp_ratio == 4.0 and backbone.drop_path_rate == drop_path and backbone.core_op == "DCNv3"
    init = backbone.get("init_cfg")
    assert (init["checkpoint"] if init else None) == (pretrained and f"{HF}{pretrained}.pth")
    if variant == "h":
        assert backbone.dw_kernel_size == 5 and backbone.res_post_norm and backbone.center_feature_scale
        assert list(backbone.level2_post_norm_block_ids) == [5, 11, 17, 23, 29]
    if variant == "g":
        assert backbone.dw_kernel_size == 5 and not backbone.res_post_norm and backbone.center_feature_scale
        assert list(backbone.level2_post_norm_block_ids) == [5, 11, 17, 23, 29, 35, 41, 47]
        for part in ("encoder", "decoder"):
            assert cfg.model[part].layer_cfg.ffn_cfg.type == "EfficientFFN"
            assert cfg.model[part].layer_cfg.ffn_cfg.split == 4
    if path.parent.name == "voc":
        assert cfg.load_from.endswith("dino_4scale_cbinternimage_h_objects365_20classes.pth")
    if "_with_dcnv4" in path.name:
        assert backbone.use_dcn_v4_op is True

    optim = cfg.optim_wrapper
    assert optim.optimizer.type == "AdamW"
    assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (pytest.approx(lr), wd)
    if layer_decay is None:
        assert optim.paramwise_cfg.custom_keys["backbone"]["lr_mult"] == 0.1
    else:
        paramwise = optim.paramwise_cfg
        assert optim.constructor == "CustomLayerDecayOptimizerConstructor"
        assert (paramwise.layer_decay_rate, list(paramwise.depths)) == (layer_decay, depths)
        assert paramwise.num_layers == sum(depths)
        assert paramwise.get("offset_lr_scale", 1.0) == offset_lr_scale
    loop = cfg.train_cfg
    assert loop.get("max_epochs", loop.get("max_iters")) == length


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_config_builds_its_model(path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(path))
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    cb = type(backbone).__name__ == "CBInternImage"
    expected = "CBInternImage" if "cbinternimage" in path.name else "InternImageBackbone"
    assert type(backbone).__name__ == expected
    assert cb == (type(model).__name__ == "CBDINO")
    assert list(cfg.model.neck.in_channels) == list(backbone.out_channels)  # the neck reads these levels
    trunk = backbone.cb_modules[0] if cb else backbone
    first = trunk.levels[2].blocks[0]
    assert first.layer_scale == (cfg.model.backbone.layer_scale is not None)
    assert sum(p.numel() for p in model.parameters()) > 1e7
