"""The published VectorMapNet configs build (on the meta device: no memory, no weights) with
the parameter counts worked out from driving_hdmap_params.md's tables, and carry the
published hyper-parameters; the tiny config changes sizes only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

import autonomous_driving.online_hdmap.registration  # noqa: F401  (registers everything)

CONFIGS = (
    Path(__file__).resolve().parents[3]
    / "autonomous_driving"
    / "Online-HD-Map-Construction"
    / "src"
    / "configs"
)

# driving.md: the InternImage-S trunk of all three driving baselines, 48.50 M parameters, 743 keys
TRUNK_PARAMS, TRUNK_KEYS = 48_502_560, 743
C, D = 128, 256  # BEV / FPN channels, head width


def linear(i: int, o: int) -> int:
    return i * o + o


def mha(d: int) -> int:  # in_proj (3d, d) + bias, out_proj (d, d) + bias
    return linear(d, 3 * d) + linear(d, d)


# §1.1: FPN (1x1 laterals and 3x3 outputs, no bias, BN), Upsample (6 blocks), outconvs, masked_embeds
FPN = sum(C * c for c in (80, 160, 320, 640)) + 4 * 2 * C + 4 * 9 * C * C + 4 * 2 * C
UPSAMPLE = 6 * (9 * C * C + C + 2 * C)
IPM_REST = 9 * C * (C + 3) * 4 + C + 4 * C
# §2: conv 7x7, BN, layer1 (2 BasicBlocks), conv 1x1
NECK = 64 * C * 49 + 2 * 64 + 2 * (2 * 64 * 64 * 9 + 2 * 2 * 64) + C * 64
# §4.1: input_proj, query / bbox embeddings, shared cls and reg branches, unused label_embed,
# img_coord_embed, level_embeds, reference_points_embed, 6 x (MHA + MSDA(8 heads, 1 level,
# 4 points) + FFN 256-512-256 + 3 LN)
MSDA = linear(D, 8 * 4 * 2) + linear(D, 8 * 4) + 2 * linear(D, D)
DET_LAYER = mha(D) + MSDA + linear(D, 2 * D) + linear(2 * D, D) + 3 * 2 * D
DET = (
    linear(C, D) + 120 * 2 * D + 2 * 2 * D + linear(2 * D, 3)
    + 2 * (linear(D, D) + 2 * D) + linear(D, 2)
    + 3 * D + linear(2, D) + D + linear(D, 2) + 6 * DET_LAYER
)  # fmt: skip
# §5.1: logits, input_proj, 6 x (3 re-zero gains, self- and cross-attention, FFN, 3 LN), the embeddings
GEN_LAYER = 3 + 2 * mha(D) + linear(D, 2 * D) + linear(2 * D, D) + 3 * 2 * D
GEN = linear(D, 201) + linear(C, D) + 6 * GEN_LAYER + (3 + 2 + 500 + 3 + 201) * D + linear(2, D)


def build(name: str, device: str = "meta") -> tuple[Config, torch.nn.Module]:
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    with torch.device(device):
        model = MODELS.build(cfg.model)
    return cfg, model


def count(model: torch.nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix))


def test_intern_config_builds_the_published_model() -> None:
    cfg, model = build("vectormapnet_intern")
    assert type(model).__name__ == "VectorMapNet"
    assert count(model, "backbone.img_backbone.") == TRUNK_PARAMS
    sd = model.state_dict()
    assert sum(k.startswith("backbone.img_backbone.") for k in sd) == TRUNK_KEYS
    assert count(model, "backbone.img_neck.") == FPN
    assert count(model, "backbone.upsample.") == UPSAMPLE
    assert count(model, "backbone.") == TRUNK_PARAMS + FPN + UPSAMPLE + IPM_REST
    assert count(model, "neck.") == NECK
    assert count(model, "head.det_net.") == DET
    assert count(model, "head.gen_net.") == GEN
    assert count(model) == TRUNK_PARAMS + FPN + UPSAMPLE + IPM_REST + NECK + DET + GEN == 60_644_418
    assert sd["backbone.bev_planes"].shape == (4, 100, 200, 3)
    assert sd["backbone.outconvs.weight"].shape == (C, 524, 3, 3)
    assert sd["head.det_net.query_embedding.weight"].shape == (120, 512)
    assert sd["head.gen_net.vertex_embed.weight"].shape == (201, D)
    assert sd["head.gen_net.pos_embeddings.weight"].shape == (500, D)
    for key in ("augmentation.canvas_size", "det_net.canvas_size", "gen_net.canvas_size"):
        assert sd[f"head.{key}"].shape == (2,)
    assert {k.split(".")[0] for k in sd} == {"backbone", "neck", "head"}


def test_intern_config_published_settings() -> None:
    cfg = Config.fromfile(str(CONFIGS / "vectormapnet_intern.py"))
    trunk = cfg.model.backbone_cfg.img_backbone
    assert (trunk.type, trunk.channels, trunk.depths, trunk.groups) == (
        "InternImage",
        80,
        [4, 4, 21, 4],
        [5, 10, 20, 40],
    )
    assert trunk.out_indices == (0, 1, 2, 3) and trunk.with_cp is False and trunk.post_norm is True
    assert trunk.init_cfg.checkpoint.endswith("internimage_s_1k_224.pth")
    assert cfg.model.backbone_cfg.heights == [-1.1, 0, 0.5, 1.1] and cfg.model.backbone_cfg.num_cam == 7
    assert cfg.model.backbone_cfg.xbound == [-30, 30, 0.3] and cfg.model.backbone_cfg.ybound == [-15, 15, 0.3]
    head = cfg.model.head_cfg
    assert (
        head.augmentation_kwargs == dict(p=0.3, scale=0.01, bbox_type="xyxy") and head.top_p_gen_model == 0.9
    )
    assert (head.det_net_cfg.num_query, head.det_net_cfg.max_lines) == (120, 35)
    cost = head.det_net_cfg.train_cfg.assigner.cost
    assert (cost.cls_cost.weight, cost.reg_cost.weight, cost.iou_cost.weight) == (2.0, 0.1, 1)
    assert head.det_net_cfg.loss_cls.loss_weight == 2.0 and head.det_net_cfg.loss_reg.loss_weight == 0.1
    # data: relative paths, the published sizes and pipeline
    for loader, ann in (("train", "train"), ("val", "val"), ("test", "test")):
        ds = cfg[f"{loader}_dataloader"].dataset
        assert ds.type == "AV2Dataset" and ds.ann_file == f"{ann}_annotations.json"
        assert not ds.data_root.startswith("/")
    assert cfg.train_dataloader.batch_size == 5 and cfg.val_dataloader.batch_size == 1
    steps = {s.type: s for s in cfg.train_dataloader.dataset.pipeline}
    assert steps["ResizeMultiViewImages"].size == (256, 455)
    assert steps["PadMultiViewImages"].size_divisor == 32 and steps["PadMultiViewImages"].change_intrinsics
    assert steps["PolygonizeLocalMapBbox"].threshold == 4 / 200
    assert steps["PackMapInputs"]["keys"] == ["img", "polys", "vectors"]
    pre = cfg.model.data_preprocessor
    assert pre.mean == [123.675, 116.28, 103.53] and pre.std == [58.395, 57.12, 57.375] and pre.bgr_to_rgb
    # optimiser and schedule
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-3, 1e-2)
    assert opt.paramwise_cfg.custom_keys == {"backbone": dict(lr_mult=0.1)} and opt.clip_grad.max_norm == 3.5
    warmup, step = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (0.1, 400) and step.milestones == [100, 120]
    assert cfg.train_cfg.max_epochs == 130 and cfg.train_cfg.val_interval == 5
    assert cfg.default_hooks.checkpoint.interval == 5 and cfg.find_unused_parameters is True


def test_resnet_config_swaps_only_the_trunk() -> None:
    cfg, model = build("vectormapnet")
    trunk = cfg.model.backbone_cfg.img_backbone
    assert (trunk.type, trunk.depth, trunk.style) == ("ResNet", 50, "caffe")
    assert trunk.init_cfg.checkpoint == "open-mmlab://detectron2/resnet50_caffe"
    r50_fpn = sum(C * c for c in (256, 512, 1024, 2048)) + FPN - sum(C * c for c in (80, 160, 320, 640))
    assert count(model, "backbone.img_neck.") == r50_fpn
    assert count(model, "neck.") == NECK and count(model, "head.") == DET + GEN
    assert count(model, "backbone.upsample.") == UPSAMPLE


@pytest.mark.parametrize("name", ["vectormapnet_tiny"])
def test_tiny_config_changes_sizes_only(name: str) -> None:
    tiny = Config.fromfile(str(CONFIGS / f"{name}.py"))
    full = Config.fromfile(str(CONFIGS / "vectormapnet_intern.py"))

    def types(node):  # every 'type' in the model config, in order: the wiring (weights aside)
        if isinstance(node, dict):
            return [node.get("type")] + [t for k, v in node.items() if k != "init_cfg" for t in types(v)]
        if isinstance(node, (list, tuple)):
            return [t for v in node for t in types(v)]
        return []

    assert types(tiny.model) == types(full.model)
    assert tiny.model.backbone_cfg.img_backbone.init_cfg is None  # no pretrained trunk for the toy
    assert (
        tiny.model.head_cfg.det_net_cfg.num_classes == 3
        and tiny.model.head_cfg.gen_net_cfg.canvas_size == (200, 100)
    )
    assert tiny.optim_wrapper == full.optim_wrapper and tiny.param_scheduler == full.param_scheduler
    assert [s.type for s in tiny.train_dataloader.dataset.pipeline] == [
        s.type for s in full.train_dataloader.dataset.pipeline
    ]
    _, model = build(name, device="cpu")  # small enough to build for real
    assert count(model) < 1_500_000
