"""timm's model conventions on InternImage, so it drops into code written for timm
backbones: features_only / feature_info, forward_intermediates and pruning, forward_features /
forward_head(pre_logits), reset_classifier, num_features / head_hidden_size, gradient
checkpointing, pretrained_cfg (eval transform as published), the Hub alias names, and one
clear error for torch.fx / TorchScript. Tiny models only (meta device for the big ones)."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import classification.models  # noqa: F401  (registers the names)
from classification.config import get_default_config
from classification.data import build_transform
from classification.models import InternImage
from classification.models.registry import HUB_ALIASES, PUBLISHED

TINY = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch",
            drop_path_rate=0.0)
TINY_H = dict(TINY, dw_kernel_size=5, res_post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=(1,), center_feature_scale=True, use_clip_projector=True)
CHANNELS = [16, 32, 64, 128]
REDUCTIONS = [4, 8, 16, 32]


def _tiny(kwargs=TINY, **extra) -> InternImage:
    model = InternImage(**{**kwargs, **extra}).eval()
    with torch.no_grad():  # non-trivial offsets/masks, so every level matters
        for name, p in model.named_parameters():
            if ".dcn.offset." in name or ".dcn.mask." in name:
                p.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64)


# ----------------------------------------------------------------------------- features_only
def test_features_only_through_create_model(x, tmp_path):
    full = timm.create_model("internimage_t_1k_224", **TINY).eval()
    path = tmp_path / "tiny.pth"
    torch.save({"model": full.state_dict()}, path)
    features = timm.create_model("internimage_t_1k_224", **TINY, features_only=True, out_indices=(1, 3),
                                 pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert features.feature_info.channels() == [32, 128] and features.feature_info.reduction() == [8, 32]
    assert features.feature_info.module_name() == ["levels.1", "levels.3"]
    # the head is gone: no classifier weights left in the wrapped model
    assert not any(k.startswith(("model.head", "model.conv_head")) for k in features.state_dict())
    with torch.no_grad():
        out = features(x)
        expected = full.forward_multiscale(x)
    assert [tuple(o.shape) for o in out] == [(2, 32, 8, 8), (2, 128, 2, 2)]
    torch.testing.assert_close(out[0], expected[1])  # pretrained weights were loaded
    torch.testing.assert_close(out[1], expected[3])
    # default: all four levels; out_indices may count from the end
    every = timm.create_model("internimage_t_1k_224", **TINY, features_only=True)
    assert every.feature_info.channels() == CHANNELS and every.feature_info.reduction() == REDUCTIONS
    last = timm.create_model("internimage_t_1k_224", **TINY, features_only=True, out_indices=(-1,))
    assert last.feature_info.channels() == [128]
    assert len(last.model.levels) == 4  # the last level is needed


def test_feature_info_of_the_plain_model():
    model = InternImage(**TINY)
    assert [f["num_chs"] for f in model.feature_info] == CHANNELS
    assert [f["reduction"] for f in model.feature_info] == REDUCTIONS
    assert [f["module"] for f in model.feature_info] == ["levels.0", "levels.1", "levels.2", "levels.3"]
    names = dict(model.named_modules())
    assert all(f["module"] in names for f in model.feature_info)


# ----------------------------------------------------------------------------- forward_intermediates
@pytest.mark.parametrize("kwargs", [TINY, TINY_H], ids=["t-like", "h-like"])
def test_forward_intermediates(kwargs, x):
    model = _tiny(kwargs)
    with torch.no_grad():
        levels = model.forward_multiscale(x)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert len(inter) == 4
        for a, b in zip(inter, levels, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert [t.shape[1] for t in inter] == CHANNELS
        assert [64 // t.shape[2] for t in inter] == REDUCTIONS
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two[0], levels[2], rtol=0, atol=0)
        chosen = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True, output_fmt="NHWC")
        torch.testing.assert_close(chosen[0], levels[0].permute(0, 2, 3, 1), rtol=0, atol=0)
        torch.testing.assert_close(chosen[1], levels[3].permute(0, 2, 3, 1), rtol=0, atol=0)
        # norm=True changes nothing (each level output already passed its own norm)
        normed = model.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], levels[3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")
    with pytest.raises(AssertionError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


def test_stop_early_skips_the_later_levels(x):
    model = _tiny()
    calls = []
    model.levels[3].register_forward_hook(lambda *_: calls.append(3))
    with torch.no_grad():
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert calls == [] and early[0].shape == (2, 32, 8, 8)
        model.forward_intermediates(x, indices=[1], stop_early=True)  # the pooled output needs every level
    assert calls == [3]


@pytest.mark.parametrize("kwargs", [TINY, TINY_H], ids=["t-like", "h-like"])
def test_prune_intermediate_layers(kwargs, x):
    model = _tiny(kwargs)
    with torch.no_grad():
        expected = model.forward_multiscale(x)
    taken = model.prune_intermediate_layers([0, 1])
    assert taken == [0, 1] and len(model.levels) == 2 and model.levels[1].downsample is None
    assert not any(k.startswith(("head", "conv_head", "clip_projector", "fc_norm", "dcnv3_head"))
                   for k in model.state_dict())
    assert model.num_features == 32 and model.num_classes == 0
    with torch.no_grad():
        out = model.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close(out[1], expected[1], rtol=0, atol=0)
        torch.testing.assert_close(model.forward_features(x), expected[1], rtol=0, atol=0)
        torch.testing.assert_close(model(x), expected[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- head API
@pytest.mark.parametrize("kwargs,width,pool", [(TINY, 192, "avg"), (TINY_H, 768, "attn")],
                         ids=["t-like", "h-like"])
def test_features_head_and_reset_classifier(kwargs, width, pool, x):
    model = _tiny(kwargs, num_classes=7)
    assert model.num_features == model.head_hidden_size == width and model.global_pool == pool
    assert model.get_classifier() is model.head
    with torch.no_grad():
        pooled = model.forward_features(x)
        logits = model(x)
        assert pooled.shape == (2, width)
        torch.testing.assert_close(model.forward_head(pooled, pre_logits=True), pooled, rtol=0, atol=0)
        torch.testing.assert_close(model.forward_head(pooled), logits, rtol=0, atol=0)
        model.reset_classifier(0)
        assert isinstance(model.head, torch.nn.Identity) and model.num_classes == 0
        torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
        # a classifier built from num_features fits what forward now returns (the timm idiom)
        assert torch.nn.Linear(model.num_features, 3)(model(x)).shape == (2, 3)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.shape == ((2, 192, 2, 2) if pool == "avg" else (2, 1024, 4, 4))
        if pool == "avg":  # averaging the unpooled map gives the pooled features
            torch.testing.assert_close(unpooled.mean((2, 3)), pooled, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="global_pool=''"):
            model.reset_classifier(10)
        with pytest.raises(ValueError, match="global_pool must be"):
            model.reset_classifier(0, "max")
        model.reset_classifier(10, pool)
        assert model.head.out_features == 10 and model(x).shape == (2, 10)
        assert float(model.head.bias.abs().sum()) == 0.0 and 0 < float(model.head.weight.std()) < 0.05


@pytest.mark.parametrize("kwargs", [TINY, TINY_H], ids=["t-like", "h-like"])
def test_set_grad_checkpointing_gives_the_same_gradients(kwargs):
    model = _tiny(kwargs, num_classes=3).double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)

    def grads():
        model.zero_grad()
        model(x).square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing()
    blocks = [b for level in model.levels for b in level.blocks]
    assert model.with_cp and all(b.with_cp for b in blocks)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for k in plain:
        torch.testing.assert_close(checkpointed[k], plain[k], rtol=1e-9, atol=1e-12)
    model.set_grad_checkpointing(False)
    assert not any(b.with_cp for b in blocks)


# ----------------------------------------------------------------------------- pretrained_cfg
@pytest.mark.parametrize("name", sorted([*PUBLISHED, *HUB_ALIASES]))
def test_pretrained_cfg_fields(name):
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    pth = HUB_ALIASES.get(name, name)
    variant, classes, size = PUBLISHED[pth]
    stride = 16 if variant in ("h", "g") else 32
    assert cfg["input_size"] == (3, size, size) and cfg["num_classes"] == classes
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center" and cfg["interpolation"] == "bicubic"
    assert cfg["pool_size"] == (size // stride, size // stride)
    assert cfg["first_conv"] == "patch_embed.conv1" and cfg["classifier"] == "head"
    assert cfg["hf_hub_filename"] == f"{pth}.pth"


@pytest.mark.parametrize("alias", sorted(HUB_ALIASES))
def test_hub_alias_names_build_the_same_model(alias):
    model = timm.create_model(alias, device="meta")
    target = timm.create_model(HUB_ALIASES[alias], device="meta")
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in target.state_dict().items()]
    assert model.num_classes == 21841
    module_names = dict(model.named_modules())
    assert model.pretrained_cfg["first_conv"] in module_names
    assert model.pretrained_cfg["classifier"] in module_names


@pytest.mark.parametrize("size", [224, 384])
def test_timm_eval_transform_is_the_published_one(size):
    """timm's transform from the pretrained_cfg equals our eval transform with TEST.CROP (short
    side to the input size, bicubic, centre crop) on a real, non-square photo."""
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut()[:, 60:])  # 512 x 452
    name = "internimage_t_1k_224" if size == 224 else "internimage_l_22kto1k_384"
    model = timm.create_model(name, device="meta")
    timm_transform = create_transform(**resolve_data_config(model=model))
    config = get_default_config()
    config.merge_from_list(["DATA.IMG_SIZE", size, "TEST.CROP", True])
    ours = build_transform(is_train=False, config=config)
    a, b = timm_transform(photo), ours(photo)
    assert a.shape == b.shape == (3, size, size)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- tracing
def test_fx_and_torchscript_fail_with_one_pointer():
    model = InternImage(**TINY)
    for trace, tool in ((torch.fx.symbolic_trace, "torch.fx"), (torch.jit.script, "TorchScript")):
        with pytest.raises(RuntimeError) as info:
            trace(model)
        message = str(info.value)
        assert tool in message and "torch.compile" in message and "torch.export" in message


def test_torch_export_works_as_the_error_says(x):
    model = _tiny()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))
