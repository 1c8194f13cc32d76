"""The published ROAD_BEVFormer configs (``autonomous_driving/openlane-v2/plugin/mmdet3d/
configs``) build with the published sizes (on the meta device), and the tiny one changes
sizes only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from autonomous_driving.openlane_v2 import registration  # noqa: F401 - registers everything

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "autonomous_driving" / "openlane-v2" / "plugin" / "mmdet3d" / "configs"
D = 256

# Parameter counts worked out from the published shapes (driving_openlane_params.md §0-§5).
FPN = 256 * (80 + 160 + 320 + 640) + 4 * 256 + 4 * (256 * 256 * 9 + 256)  # 4 laterals + 4 outputs, no extra
LINEAR = D * D + D
FFN = (D * 512 + 512) + (512 * D + D)
CONSTRUCTOR = (
    20000 * D + 4 * D + 7 * D  # bev_embedding, level_embeds, cams_embeds
    + (18 * 128 + 128) + (128 * D + D) + 2 * D  # can_bus_mlp (Linear, Linear, LayerNorm)
    + (100 + 200) * 128  # learned positional encoding rows / cols
    + 3 * (  # encoder layers
        (512 * 128 + 128) + (512 * 64 + 64) + 2 * LINEAR  # TSA
        + (D * 512 + 512) + (D * 256 + 256) + LINEAR + LINEAR  # MSDA3D (no output proj) + SCA output proj
        + FFN + 3 * 2 * D))
LANE_HEAD = (
    15 + 100 * 512  # code_weights, query_embedding
    + 6 * (2 * (LINEAR + 2 * D) + (D + 1))  # cls branches: (Linear, LN) x 2, Linear(1)
    + 6 * (2 * LINEAR + (D * 15 + 15))  # reg branches
    + (D * 3 + 3)  # reference_points
    + 6 * ((3 * D * D + 3 * D) + LINEAR  # decoder: MHA
           + (D * 64 + 64) + (D * 32 + 32) + 2 * LINEAR  # CustomMSDA, 1 level
           + FFN + 3 * 2 * D))
MSDA_4_LEVELS = (D * 256 + 256) + (D * 128 + 128) + 2 * LINEAR
TE_HEAD = (
    100 * 512 + 6 * (13 * D + 13) + 6 * (2 * LINEAR + (4 * D + 4))  # queries, cls, reg branches
    + 4 * D + (2 * D + 2)  # level_embeds, reference_points
    + 6 * (MSDA_4_LEVELS + FFN + 2 * 2 * D)  # encoder
    + 6 * ((3 * D * D + 3 * D) + LINEAR + MSDA_4_LEVELS + FFN + 3 * 2 * D))  # decoder
RELATIONSHIP_HEAD = 2 * (LINEAR + LINEAR + (D * 128 + 128)) + (LINEAR + LINEAR + (D + 1))
INTERNIMAGE_S = 48_502_560  # the repository's dense backbone at the published arguments (48.50 M, 743 keys)


def _build(name: str, device: str = "meta"):
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    with torch.device(device):
        return cfg, MODELS.build(cfg.model)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_internimage_s_has_the_published_sizes_and_names():
    cfg, model = _build("internimage-s")
    assert type(model).__name__ == "ROAD_BEVFormer"
    assert cfg.custom_imports.imports == ["autonomous_driving.openlane_v2.registration"]
    counts = {name: _count(child) for name, child in model.named_children()}
    assert counts == {
        "data_preprocessor": 0, "img_backbone": INTERNIMAGE_S, "img_neck": FPN, "pts_bbox_head": LANE_HEAD,
        "bev_constructor": CONSTRUCTOR, "bbox_head": TE_HEAD, "lclc_head": RELATIONSHIP_HEAD,
        "lcte_head": RELATIONSHIP_HEAD,
    }
    assert sum(counts.values()) == 73_906_428
    assert len(model.img_backbone.state_dict()) == 743
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in {
        "bev_constructor.bev_embedding.weight": (20000, 256),
        "bev_constructor.cams_embeds": (7, 256),
        "bev_constructor.encoder.layers.2.attentions.0.sampling_offsets.weight": (128, 512),
        "bev_constructor.encoder.layers.2.attentions.1.deformable_attention.sampling_offsets.weight":
            (512, 256),
        "pts_bbox_head.code_weights": (15,),
        "pts_bbox_head.cls_branches.5.6.weight": (1, 256),
        "pts_bbox_head.reg_branches.5.4.weight": (15, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.1.sampling_offsets.weight": (64, 256),
        "bbox_head.transformer.level_embeds": (4, 256),
        "bbox_head.transformer.encoder.layers.5.attentions.0.attention_weights.weight": (128, 256),
        "bbox_head.cls_branches.5.weight": (13, 256),
        "lclc_head.MLP_o1.layers.2.weight": (128, 256),
        "lcte_head.classifier.layers.2.weight": (1, 256),
        "img_neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
    }.items():
        assert shapes.get(key) == shape, key
    assert "img_neck.fpn_convs.4.conv.weight" not in shapes  # num_outs=4 on 4 inputs: no extra conv


def test_internimage_s_published_settings():
    cfg = Config.fromfile(str(CONFIGS / "internimage-s.py"))
    m = cfg.model
    assert m.img_backbone.out_indices == (0, 1, 2, 3) and m.img_backbone.with_cp is False
    assert m.img_backbone.init_cfg.checkpoint.endswith("internimage_s_1k_224.pth")
    assert m.bev_constructor.pc_range == [-51.2, -25.6, -2.3, 51.2, 25.6, 1.7]
    assert (m.bev_constructor.bev_h, m.bev_constructor.bev_w, m.bev_constructor.num_cams) == (100, 200, 7)
    assert m.bev_constructor.rotate_center == [50, 100]
    assert m.train_cfg.pts.assigner.reg_cost.weight == 0.0075
    assert m.bbox_head.loss_bbox.loss_weight == 2.5 and m.lclc_head.loss_rel.loss_weight == 5
    assert cfg.optim_wrapper.optimizer == dict(type="AdamW", lr=2e-4, weight_decay=0.01)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {"img_backbone": dict(lr_mult=0.1)}
    assert cfg.optim_wrapper.clip_grad.max_norm == 35
    warmup, cosine = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (pytest.approx(1 / 3), 500) and cosine.eta_min_ratio == 1e-3
    assert cfg.train_cfg.max_epochs == 24 and cfg.train_cfg.val_interval == 1
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    assert cfg.train_dataloader.batch_size == 1 and cfg.auto_scale_lr.base_batch_size == 8
    steps = [t.type for t in cfg.train_pipeline]
    assert steps == ["CustomLoadMultiViewImageFromFiles", "NormalizeMultiviewImage",
                     "PhotoMetricDistortionMultiViewImage", "ResizeFrontView", "CustomPadMultiViewImage",
                     "CustomParameterizeLane", "PackOpenLaneInputs"]
    # relative data paths, read from the working directory as published
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.data_root == "data/OpenLane-V2/" == loader.dataset.meta_root
    assert cfg.train_dataloader.dataset.collection == "data_dict_subset_A_train"
    assert cfg.val_evaluator.ann_file == "data/OpenLane-V2/data_dict_subset_A_val.pkl"


def test_baseline_large_is_internimage_s_on_resnet50():
    cfg, model = _build("baseline_large")
    assert cfg.model.img_backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert cfg.model.img_backbone.frozen_stages == 1 and cfg.model.img_backbone.out_indices == (1, 2, 3)
    extra = 256 * 256 * 9 + 256  # num_outs 4 on 3 inputs: one stride-2 conv on the last output
    assert _count(model.img_neck) == 256 * (512 + 1024 + 2048) + 3 * 256 + 3 * (256 * 256 * 9 + 256) + extra
    assert _count(model.img_backbone) == 23_508_032  # ResNet-50 without its classifier
    assert _count(model) - _count(model.img_backbone) - _count(model.img_neck) == (
        LANE_HEAD + CONSTRUCTOR + TE_HEAD + 2 * RELATIONSHIP_HEAD)


def _types(node, path=()):
    """``{path: type}`` of every typed dict in a config tree."""
    out = {}
    if isinstance(node, dict):
        if "type" in node:
            out[path] = node["type"]
        for key, value in node.items():
            out.update(_types(value, (*path, key)))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            out.update(_types(value, (*path, i)))
    return out


def test_tiny_changes_sizes_only_and_builds():
    base = Config.fromfile(str(CONFIGS / "internimage-s.py"))
    tiny, model = _build("internimage-s_tiny", device="cpu")
    assert (tiny.model.bev_constructor.bev_h, tiny.model.bev_constructor.bev_w) == (10, 20)
    base_types, tiny_types = _types(base.model.to_dict()), _types(tiny.model.to_dict())
    # the tiny config names its FFN widths (ffn_cfgs) and starts from scratch (no pretrained
    # trunk); every other typed module is the published one
    assert {p: t for p, t in tiny_types.items() if "ffn_cfgs" not in p} == {
        p: t for p, t in base_types.items() if p != ("img_backbone", "init_cfg")}
    for key in ("train_cfg",):
        assert tiny.model[key] == base.model[key]
    for head in ("pts_bbox_head", "bbox_head"):
        for loss in ("loss_cls", "loss_bbox", "loss_iou"):
            assert tiny.model[head][loss] == base.model[head][loss]
    assert tiny.optim_wrapper == base.optim_wrapper and tiny.param_scheduler == base.param_scheduler
    assert tiny.train_pipeline == base.train_pipeline and tiny.test_pipeline == base.test_pipeline
    assert tiny.val_evaluator == base.val_evaluator
    assert _count(model) < 1_000_000
