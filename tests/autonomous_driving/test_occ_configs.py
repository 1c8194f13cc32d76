"""The published BEVFormer-Occ configs (driving_occupancy.md §1.1-§1.2) build with the published
structure and values: intern-s key for key against the published state_dict (on the meta
device: no memory, no init), base/small with their trunks, and the tiny config differs from
intern-s in sizes only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from synthetic_occ import SHARED_DATA

CONFIGS = Path(__file__).resolve().parents[2] / "autonomous_driving/occupancy_prediction/projects/configs"
BEVFORMER = CONFIGS / "bevformer"
PUBLISHED_PARAMETERS = 64_818_930


def load(name: str) -> Config:
    return Config.fromfile(str(BEVFORMER / name))


def build_on_meta(cfg: Config) -> torch.nn.Module:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)  # module fixtures run before conftest's per-test scope
    with torch.device("meta"):
        return MODELS.build(cfg.model)


def published_keys() -> list[tuple[str, tuple[int, ...]]]:
    path = SHARED_DATA / "bevformer_intern-s_occ_keys.txt"
    assert path.is_file(), f"{path} not found: ../shared/data must sit beside the repo"
    entries = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.rsplit(" (", 1)
            entries.append((key, tuple(int(v) for v in shape.rstrip(")").split(",") if v.strip())))
    return entries


def flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(node, (list, tuple)):
        return {k: v for i, value in enumerate(node) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: node}


@pytest.fixture(scope="module")
def intern_s() -> tuple[Config, torch.nn.Module]:
    cfg = load("bevformer_intern-s_occ.py")
    return cfg, build_on_meta(cfg)


def test_intern_s_is_the_published_model_key_for_key(intern_s) -> None:
    _, model = intern_s
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS
    expected = published_keys()
    assert len(expected) == 888
    ours = [(k, tuple(v.shape)) for k, v in state.items()]
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    assert [k for k, _ in ours] == [k for k, _ in expected]  # the published state_dict order


def test_intern_s_published_values(intern_s) -> None:
    cfg, model = intern_s
    assert cfg.default_scope == "mmdet"
    assert cfg.custom_imports.imports == ["autonomous_driving.occupancy_prediction.bevformer_occ"]
    backbone = cfg.model.img_backbone
    assert (backbone.type, backbone.channels, backbone.depths, backbone.groups) == (
        "InternImage", 80, [4, 4, 21, 4], [5, 10, 20, 40])
    assert backbone.post_norm and backbone.with_cp and backbone.out_indices == (1, 2, 3)
    assert backbone.drop_path_rate == 0.3 and backbone.init_cfg.checkpoint.endswith(
        "mask_rcnn_internimage_s_fpn_3x_coco.pth")
    head = model.pts_bbox_head
    assert (head.bev_h, head.bev_w, head.num_classes, head.use_mask) == (200, 200, 18, False)
    assert len(head.transformer.encoder.layers) == 4
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == [123.675, 116.28, 103.53] and preprocessor.std == [58.395, 57.12, 57.375]
    assert preprocessor.bgr_to_rgb and preprocessor.pad_size_divisor == 32
    # data
    train, test = cfg.train_dataloader, cfg.test_dataloader
    assert train.dataset.type == "NuSceneOcc" and train.dataset.queue_length == 4 and train.batch_size == 1
    assert train.dataset.ann_file == "data/occ3d-nus/occ_infos_temporal_train.pkl"
    assert test.dataset.ann_file == "data/occ3d-nus/occ_infos_temporal_val.pkl" and test.dataset.test_mode
    assert test.sampler.type == "ContiguousSampler"  # the temporal state runs through the frames in order
    assert cfg.test_evaluator.type == "OccMetric" and cfg.test_evaluator.use_image_mask
    # schedule
    optim = cfg.optim_wrapper
    assert (optim.optimizer.type, optim.optimizer.lr, optim.optimizer.weight_decay) == ("AdamW", 2e-4, 0.05)
    assert optim.constructor == "CustomLayerDecayOptimizerConstructor"
    assert optim.paramwise_cfg == dict(num_layers=33, layer_decay_rate=1.0, depths=[4, 4, 21, 4])
    assert optim.clip_grad.max_norm == 35
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ("LinearLR", 1 / 3, 500, False)
    assert (cosine.type, cosine.eta_min_ratio, cosine.T_max, cosine.by_epoch) == (
        "CosineAnnealingLR", 1e-3, 24, True)
    assert (cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval) == (24, 1)
    assert cfg.auto_scale_lr.base_batch_size == 8


def test_base_is_resnet101_dcn_caffe() -> None:
    from mmcv.ops import ModulatedDeformConv2dPack
    from mmdet.models.backbones import ResNet

    cfg = load("bevformer_base_occ.py")
    model = build_on_meta(cfg)
    trunk = model.img_backbone
    assert isinstance(trunk, ResNet) and trunk.depth == 101 and trunk.style == "caffe"
    assert trunk.out_indices == (1, 2, 3) and trunk.frozen_stages == 1 and trunk.norm_eval
    dcn_stages = {name.split(".")[0] for name, m in trunk.named_modules()
                  if isinstance(m, ModulatedDeformConv2dPack)}
    assert dcn_stages == {"layer3", "layer4"}
    assert [c.conv.in_channels for c in model.img_neck.lateral_convs] == [512, 1024, 2048]
    assert len(model.pts_bbox_head.transformer.encoder.layers) == 4
    assert cfg.model.data_preprocessor.mean == [103.530, 116.280, 123.675]
    assert cfg.model.data_preprocessor.std == [1.0, 1.0, 1.0] and not cfg.model.data_preprocessor.bgr_to_rgb
    optim = cfg.optim_wrapper
    assert optim.optimizer.weight_decay == 0.01 and optim.optimizer.lr == 2e-4
    assert optim.paramwise_cfg == dict(custom_keys={"img_backbone": dict(lr_mult=0.1)})
    assert optim.clip_grad.max_norm == 35 and "constructor" not in optim
    assert cfg.load_from == "ckpts/r101_dcn_fcos3d_pretrain.pth"
    # the head is the intern-s one, key for key
    head_keys = {k: tuple(s) for k, s in published_keys() if k.startswith("pts_bbox_head.")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("pts_bbox_head.")}
    assert ours == head_keys


def test_small_is_resnet50_two_levels_one_layer() -> None:
    cfg = load("bevformer_small_occ.py")
    model = build_on_meta(cfg)
    assert model.img_backbone.depth == 50 and model.img_backbone.out_indices == (2, 3)
    assert len(model.img_neck.lateral_convs) == 2 and cfg.model.img_neck.num_outs == 2
    transformer = model.pts_bbox_head.transformer
    assert len(transformer.encoder.layers) == 1 and tuple(transformer.level_embeds.shape) == (2, 256)
    sca = transformer.encoder.layers[0].attentions[1].deformable_attention
    assert sca.num_levels == 2
    scales = [[t.scales for t in p if t.type == "RandomScaleImageMultiViewImage"]
              for p in (cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline)]
    assert scales == [[[0.2]], [[0.8]]]


# what "sizes only" may touch (config leaf names)
SIZE_KEYS = {
    "channels", "depths", "groups", "in_channels", "out_channels", "checkpoint", "init_cfg", "embed_dims",
    "num_layers", "num_points_in_pillar", "num_points", "feedforward_channels", "rotate_center", "bev_h",
    "bev_w", "bev_size", "row_num_embed", "col_num_embed", "num_feats", "queue_length", "voxel_size",
    "_dim_", "_ffn_dim_", "_pos_dim_", "bev_h_", "bev_w_",  # the configs' size variables
}


def test_tiny_changes_sizes_only() -> None:
    published = flatten(load("bevformer_intern-s_occ.py").to_dict())
    tiny_cfg = load("bevformer_tiny_occ.py")
    tiny = flatten(tiny_cfg.to_dict())
    keys = set(published) | set(tiny)
    changed = {k for k in keys if published.get(k, "<absent>") != tiny.get(k, "<absent>")}
    # the explicit FFN config (the published FFN default is 256 wide) restates published values
    ffn = {k for k in changed if ".transformerlayers.ffn_cfgs." in k}
    assert {tiny[k] for k in ffn if k.endswith(("ffn_drop", "num_fcs", ".type"))} == {0.1, 2, "FFN", "ReLU"}
    not_sizes = sorted(k for k in changed - ffn
                       if not any(part in SIZE_KEYS for part in k.split(".") if not part.isdigit()))
    assert not not_sizes, f"the tiny config changes more than sizes: {not_sizes}"
    model = build_on_meta(tiny_cfg)
    assert model.pts_bbox_head.bev_embedding.weight.shape == (400, 64)


def test_layer_decay_constructor_groups_the_occupancy_model() -> None:
    """The published optimizer: CustomLayerDecayOptimizerConstructor at rate 1.0 puts every
    parameter at the base lr; no weight decay on 1-D tensors, biases, norms, sampling offsets."""
    from mmengine.optim import build_optim_wrapper

    cfg = load("bevformer_tiny_occ.py")
    model = build_on_meta(cfg).to_empty(device="cpu")
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = wrapper.optimizer.param_groups
    assert {g["lr"] for g in groups} == {2e-4}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        exempt = param.ndim == 1 or name.endswith(".bias") or "norm" in name or "sampling_offsets" in name
        assert decay_of[id(param)] == (0.0 if exempt else 0.05), name
