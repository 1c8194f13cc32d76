"""Layer-wise lr decay (dense.md) on the real Mask R-CNN InternImage-T model, and the
deformable-attention offset lr scale on DINO."""

from __future__ import annotations

import pytest
import torch
from conftest import DETECTION
from mmengine.config import Config

DEPTHS = [4, 4, 18, 4]
RATE = 0.9


def _build(config: str, paramwise: dict, meta: bool = False):
    from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(DETECTION / "configs/coco" / config))
    cfg.model.backbone.init_cfg = None
    if meta:
        with torch.device("meta"):
            model = MODELS.build(cfg.model)
    else:
        model = MODELS.build(cfg.model)
    optim_cfg = cfg.optim_wrapper.to_dict()
    optim_cfg.pop("paramwise_cfg")
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=optim_cfg.pop("constructor"), optim_wrapper_cfg=optim_cfg, paramwise_cfg=paramwise))
    wrapper = constructor(model)
    names = {id(p): n for n, p in model.named_parameters()}
    per_param = {}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            per_param[names[id(p)]] = group
    return model, wrapper, per_param


@pytest.fixture(scope="module")
def mask_rcnn_t():
    return _build("mask_rcnn_internimage_t_fpn_1x_coco.py",
                  dict(num_layers=30, layer_decay_rate=RATE, depths=DEPTHS))


@pytest.mark.parametrize("name, layer", [
    ("backbone.patch_embed.conv1.weight", 0),
    ("backbone.levels.0.blocks.0.dcn.input_proj.weight", 1),
    ("backbone.levels.0.blocks.3.mlp.fc2.weight", 4),
    ("backbone.levels.0.downsample.conv.weight", 5),
    ("backbone.levels.1.blocks.0.dcn.offset.weight", 5),
    ("backbone.levels.2.blocks.17.mlp.fc1.weight", 26),
    ("backbone.levels.2.downsample.conv.weight", 27),
    ("backbone.levels.3.blocks.3.dcn.output_proj.weight", 30),
    ("neck.fpn_convs.0.conv.weight", 31),
    ("roi_head.mask_head.conv_logits.weight", 31),
])
def test_lr_scale_follows_the_layer_id(mask_rcnn_t, name, layer):
    _, wrapper, per_param = mask_rcnn_t
    group = per_param[name]
    assert group["lr"] == pytest.approx(1e-4 * RATE ** (31 - layer))
    assert group["weight_decay"] == 0.05  # 2-D weights decay


@pytest.mark.parametrize("name", ["backbone.levels.0.blocks.0.gamma1", "backbone.levels.3.norm.0.weight",
                                  "backbone.levels.1.blocks.2.dcn.offset.bias", "neck.fpn_convs.0.conv.bias"])
def test_no_weight_decay_on_norms_biases_and_gammas(mask_rcnn_t, name):
    _, _, per_param = mask_rcnn_t
    assert per_param[name]["weight_decay"] == 0.0


def test_every_trainable_parameter_is_in_exactly_one_group(mask_rcnn_t):
    model, wrapper, _ = mask_rcnn_t
    grouped = [p for g in wrapper.optimizer.param_groups for p in g["params"]]
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(grouped) == len({id(p) for p in grouped}) == trainable


def test_offset_lr_scale_applies_to_deformable_attention_offsets():
    _, _, per_param = _build("dino_4scale_internimage_t_1x_coco_layer_wise_lr.py",
                             dict(num_layers=30, layer_decay_rate=RATE, depths=DEPTHS, offset_lr_scale=0.01),
                             meta=True)
    offsets = [n for n in per_param if "sampling_offsets" in n]
    assert offsets
    for name in offsets:
        assert per_param[name]["lr"] == pytest.approx(1e-4 * 0.01)
        assert per_param[name]["weight_decay"] == 0.0
    attention = "encoder.layers.0.self_attn.attention_weights.weight"
    assert per_param[attention]["lr"] == pytest.approx(1e-4)
    # the backbone's DCNv3 offsets keep their layer's rate
    assert per_param["backbone.levels.1.blocks.0.dcn.offset.weight"]["lr"] == pytest.approx(1e-4 * RATE ** 26)
