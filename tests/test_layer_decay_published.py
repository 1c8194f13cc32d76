"""Layer-wise lr decay in the dense trees as the published constructors compute it
(dense_fidelity.md, last section): for every detection and segmentation config that uses
``CustomLayerDecayOptimizerConstructor``, each parameter's lr scale and weight decay equal
the published rule evaluated on its PUBLISHED name (``dense_common.published_keys``).
Models on the meta device; configs that differ only in class counts build one model."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="mmdet 3 is not installed (tools/bootstrap.sh installs it)")
pytest.importorskip("mmseg", reason="mmseg 1 is not installed (tools/bootstrap.sh installs it)")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from dense_common.published_keys import to_published  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for tree_dir in (REPO / "detection", REPO / "segmentation"):  # custom_imports of the configs
    if str(tree_dir) not in sys.path:
        sys.path.insert(0, str(tree_dir))
CONSTRUCTOR = "CustomLayerDecayOptimizerConstructor"
_STRUCTURE_FREE = (
    "num_classes",
    "data_preprocessor",
    "train_cfg",
    "test_cfg",
    "init_cfg",
    "pretrained",
    "loss_cls",
    "loss_mask",
    "loss_dice",
    "class_weight",
)


# ------------------------------------------------------------------ the published rule, plainly
def published_layer_id(name: str, num_layers: int, depths: list[int], tree: str) -> int:
    """get_num_layer_for_swin of the published trees, with num_layers = paramwise num_layers + 2."""
    if name.startswith("backbone.patch_embed"):
        return 0
    if "level_embeds" in name:
        return 0
    if tree == "segmentation" and (
        name.startswith("decode_head.mask_embed")
        or name.startswith("decode_head.cls_embed")
        or name.startswith("decode_head.level_embed")
        or name.startswith("decode_head.query_embed")
        or name.startswith("decode_head.query_feat")
        or name.startswith("backbone.cb_modules.0.patch_embed")
    ):
        return 0
    if name.startswith("backbone.levels"):
        stage = int(name.split(".")[2])
        part = name.split(".")[3]
        if part not in ("downsample", "norm"):
            block = int(name.split(".")[4])
            if stage == 0:
                return block + 1
            if stage == 1:
                return block + 1 + depths[0]
            if stage == 2:
                return block + 1 + depths[0] + depths[1]
            return block + 1 + depths[0] + depths[1] + depths[2]
        if stage == 0:
            return 1 + depths[0]
        if stage == 1:
            return 1 + depths[0] + depths[1]
        return 1 + depths[0] + depths[1] + depths[2]  # stages 2 and 3 alike
    return num_layers - 1


def published_rule(name: str, ndim: int, paramwise: dict, base_wd: float, tree: str) -> tuple[float, float]:
    """(lr scale, weight decay) of a parameter by its published name."""
    num_layers = paramwise["num_layers"] + 2
    rate = paramwise["layer_decay_rate"]
    offset_lr_scale = paramwise.get("offset_lr_scale", 1.0)
    if (
        ndim == 1
        or name.endswith(".bias")
        or "relative_position" in name
        or "norm" in name
        or "sampling_offsets" in name
    ):
        weight_decay = 0.0
    else:
        weight_decay = base_wd
    layer = published_layer_id(name, num_layers, list(paramwise["depths"]), tree)
    offset = "sampling_offsets" in name or "reference_points" in name
    scale = rate ** (num_layers - layer - 1)
    if paramwise.get("backbone_small_lr") and scale < 1:
        scale *= 0.1
    if paramwise.get("dino_head") and layer == num_layers - 1 and offset:
        scale *= 0.1
    elif offset and (tree == "detection" or "backbone" in name):
        scale *= offset_lr_scale
    return scale, weight_decay


# ------------------------------------------------------------------ the configs
def _configs() -> dict[str, list[tuple[str, Path]]]:
    """Configs with the constructor, grouped by model structure + optimizer settings."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    for tree in ("detection", "segmentation"):
        for path in sorted((REPO / tree / "configs").rglob("*.py")):
            if "_base_" in path.parts:
                continue
            cfg = Config.fromfile(str(path), import_custom_modules=False)  # _build imports the plugins
            optim = cfg.get("optim_wrapper", {})
            if optim.get("constructor") != CONSTRUCTOR:
                continue
            key = json.dumps(
                [tree, _structure(cfg.model.to_dict()), optim.to_dict()], sort_keys=True, default=str
            )
            groups.setdefault(key, []).append((tree, path))
    return groups


def _structure(node):
    if isinstance(node, dict):
        return {k: _structure(v) for k, v in node.items() if k not in _STRUCTURE_FREE}
    if isinstance(node, (list, tuple)):
        return [_structure(v) for v in node]
    return node


GROUPS = list(_configs().values())


def _id(group: list[tuple[str, Path]]) -> str:
    tree, path = group[0]
    return f"{path.relative_to(REPO / tree / 'configs').with_suffix('')}(+{len(group) - 1})"


@functools.cache
def _build(tree: str, path: Path):
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    scope = "mmdet" if tree == "detection" else "mmseg"
    init_default_scope(scope)
    if tree == "detection":
        import mmdet_custom  # noqa: F401
        from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    else:
        import mmseg_custom  # noqa: F401
        from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    optim = cfg.optim_wrapper.to_dict()
    paramwise = optim.pop("paramwise_cfg")
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=optim.pop("constructor"), optim_wrapper_cfg=optim, paramwise_cfg=paramwise)
    )
    wrapper = constructor(model)
    return model, wrapper, paramwise, optim["optimizer"]


def test_every_layer_decay_config_is_covered():
    configs = [path for group in GROUPS for _, path in group]
    trees = {tree for group in GROUPS for tree, _ in group}
    assert trees == {"detection", "segmentation"}
    names = {p.stem for p in configs}
    assert {
        "dino_4scale_internimage_h_objects365_coco_ss",
        "mask_rcnn_internimage_t_fpn_1x_coco",
        "cascade_internimage_l_fpn_3x_coco",
        "upernet_internimage_h_896_160k_ade20k",
        "mask2former_internimage_h_896_80k_cocostuff2ade20k_ss",
    } <= names


@pytest.mark.parametrize("group", GROUPS, ids=_id)
def test_lr_scale_and_weight_decay_follow_the_published_rule(group):
    tree, path = group[0]
    model, wrapper, paramwise, optimizer = _build(tree, path)
    base_lr, base_wd = optimizer["lr"], optimizer.get("weight_decay", 0.0)
    params = dict(model.named_parameters())
    cb = any(n.startswith("backbone.cb_modules.") for n in params)
    seen = set()
    mismatches = []
    by_id = {id(p): n for n, p in params.items()}
    for g in wrapper.optimizer.param_groups:
        for p in g["params"]:
            name = by_id[id(p)]
            assert name not in seen, f"{name} is in two groups"
            seen.add(name)
            published = to_published(name, cb=cb)
            scale, wd = published_rule(published, p.ndim, paramwise, base_wd, tree)
            if g["lr"] != pytest.approx(base_lr * scale, rel=1e-9) or g["weight_decay"] != wd:
                mismatches.append(
                    f"{name} ({published}): lr {g['lr']:.6g} wd {g['weight_decay']} "
                    f"!= published lr {base_lr * scale:.6g} wd {wd}"
                )
    assert not mismatches, f"{len(mismatches)} parameters off the published rule:\n" + "\n".join(
        mismatches[:20]
    )
    assert seen == {n for n, p in params.items() if p.requires_grad}


# ------------------------------------------------------------------ published values, spot checks
def _per_param(tree: str, config: str) -> tuple[dict, float]:
    """The config's group representative (same model and optimizer settings), built once."""
    path = REPO / tree / "configs" / config
    (group,) = [g for g in GROUPS if (tree, path) in g]
    model, wrapper, _, optimizer = _build(*group[0])
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: g for g in wrapper.optimizer.param_groups for p in g["params"]}, optimizer["lr"]


def test_mask2former_h_queries_and_embeddings_train_at_the_patch_embed_rate():
    """rate 0.95, 50 blocks: layer 0 trains at 0.95 ** 51 ~ 0.073 x."""
    per_param, lr = _per_param(
        "segmentation", "ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py"
    )
    for name in (
        "decode_head.query_embed.weight",
        "decode_head.query_feat.weight",
        "decode_head.level_embed.weight",
        "decode_head.cls_embed.weight",
        "backbone.patch_embed.conv1.weight",
    ):
        assert per_param[name]["lr"] == pytest.approx(lr * 0.95**51), name
    assert 0.95**51 == pytest.approx(0.0731, abs=1e-4)
    mask_embed = [n for n in per_param if n.startswith("decode_head.mask_embed.")]
    assert mask_embed and all(per_param[n]["lr"] == pytest.approx(lr * 0.95**51) for n in mask_embed)
    # H: level-2 post-norm j counts like block j of level 2; levels.3.norm is level 2's layer
    assert per_param["backbone.levels.2.post_norms.1.0.weight"]["lr"] == pytest.approx(lr * 0.95 ** (51 - 14))
    assert per_param["backbone.levels.3.norm.0.weight"]["lr"] == pytest.approx(lr * 0.95 ** (51 - 45))
    # offset_lr_scale is inert in segmentation: the pixel decoder's deformable attention at 1x
    offsets = [n for n in per_param if "sampling_offsets" in n]
    assert offsets and all(per_param[n]["lr"] == pytest.approx(lr) for n in offsets)


def test_dino_h_deformable_attention_at_offset_lr_scale_and_level_embeds_at_layer_0():
    per_param, lr = _per_param("detection", "coco/dino_4scale_internimage_h_objects365_coco_ss.py")
    offsets = [n for n in per_param if "sampling_offsets" in n]
    assert offsets and all(per_param[n]["lr"] == pytest.approx(lr * 1e-3) for n in offsets)
    assert all(per_param[n]["weight_decay"] == 0.0 for n in offsets)
    assert per_param["level_embed"]["lr"] == pytest.approx(lr * 0.94**51)  # published level_embeds
    assert per_param["level_embed"]["weight_decay"] > 0
    assert per_param["backbone.levels.3.norm.0.weight"]["lr"] == pytest.approx(lr * 0.94 ** (51 - 45))
    # published enc_output_norm: a norm, no weight decay (ours is memory_trans_norm)
    assert per_param["memory_trans_fc.weight"]["weight_decay"] > 0


def test_offset_lr_scale_per_tree_on_published_names():
    """The tree rule itself where no shipped config exercises it: in segmentation only
    names with ``backbone`` take offset_lr_scale; ``dino_head`` gives the head's offsets
    x0.1 instead; ``backbone_small_lr`` adds x0.1 to every decayed scale."""
    from dense_common.layer_decay import lr_scale

    rule = dict(num_layers=30, depths=[4, 4, 18, 4], layer_decay_rate=0.9, offset_lr_scale=0.01)
    head = "decode_head.pixel_decoder.encoder.layers.0.attentions.0.sampling_offsets.weight"
    assert lr_scale(head, **rule, tree="segmentation") == 1.0
    assert lr_scale(head, **rule, tree="detection") == pytest.approx(0.01)
    assert lr_scale("backbone.x.sampling_offsets.weight", **rule, tree="segmentation") == pytest.approx(0.01)
    assert lr_scale(head, **rule, dino_head=True, tree="detection") == pytest.approx(0.1)
    block = "backbone.levels.0.blocks.0.mlp.fc1.weight"
    assert lr_scale(block, **rule, backbone_small_lr=True) == pytest.approx(0.9**30 * 0.1)
    for name, want in (
        (block, 1),
        ("backbone.levels.2.post_norms.3.0.weight", 12),
        ("backbone.levels.3.norm.0.weight", 27),
        ("backbone.levels.3.downsample.conv.weight", 27),
        ("backbone.levels.1.norm.0.weight", 9),
        ("neck.fpn.0.weight", 31),
    ):
        assert published_layer_id(name, 32, [4, 4, 18, 4], "detection") == want, name
        assert lr_scale(name, num_layers=30, depths=[4, 4, 18, 4], layer_decay_rate=0.9) == pytest.approx(
            0.9 ** (31 - want)
        ), name
