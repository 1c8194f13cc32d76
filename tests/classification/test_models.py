"""The InternImage backbone against model.md: state_dict names/shapes/counts of the seven
published variants (built on the meta device), compiled vs reference operator, features,
gradient checkpointing, layer-wise lr decay and argument errors."""

from __future__ import annotations

import copy

import pytest
import torch

from classification.models import VARIANTS, InternImage

# model.md: len(state_dict()) and parameter count in millions (1K head)
EXPECTED = {"t": (633, 29.92), "s": (751, 50.08), "b": (751, 97.46), "l": (839, 223.33),
            "xl": (883, 334.82), "h": (1357, 1089.64), "g": (1295, 3076.37)}

# A small model exercising every option of the H variant (dw kernel 5, res-post-norm,
# level-2 post-norms, centre feature scale, CLIP projector head); channels // groups = 16.
SMALL_H = dict(channels=16, depths=(1, 1, 3, 1), groups=(1, 2, 4, 8), layer_scale=None, offset_scale=1.0,
               post_norm=False, dw_kernel_size=5, res_post_norm=True, level2_post_norm=True,
               level2_post_norm_block_ids=(1,), center_feature_scale=True, use_clip_projector=True,
               num_classes=7, drop_path_rate=0.0)
SMALL_S = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), layer_scale=1e-5, offset_scale=2.0,
               post_norm=True, num_classes=5, drop_path_rate=0.0)
SMALL_T = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), layer_scale=None, offset_scale=1.0,
               post_norm=False, num_classes=5, drop_path_rate=0.0)


def _meta(variant: str, **kwargs) -> InternImage:
    with torch.device("meta"):
        return InternImage(**{**VARIANTS[variant], **kwargs})


@pytest.fixture(scope="module")
def meta_models() -> dict[str, InternImage]:
    return {v: _meta(v) for v in EXPECTED}


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_state_dict_counts(meta_models, variant):
    model = meta_models[variant]
    keys, params = EXPECTED[variant]
    assert len(model.state_dict()) == keys
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params


def _shapes(model: InternImage) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_t_names_and_shapes(meta_models):
    s = _shapes(meta_models["t"])
    assert s["patch_embed.conv1.weight"] == (32, 3, 3, 3)
    assert s["patch_embed.norm1.1.weight"] == (32,)
    assert s["patch_embed.norm2.1.bias"] == (64,)
    assert s["levels.0.blocks.0.dcn.dw_conv.1.1.weight"] == (64,)
    assert s["levels.0.blocks.0.dcn.dw_conv.0.weight"] == (64, 1, 3, 3)
    assert s["levels.0.blocks.0.dcn.offset.weight"] == (4 * 9 * 2, 64)
    assert s["levels.0.blocks.0.dcn.mask.weight"] == (4 * 9, 64)
    assert s["levels.2.blocks.17.mlp.fc1.weight"] == (1024, 256)
    assert s["levels.0.downsample.conv.weight"] == (128, 64, 3, 3)
    assert "levels.0.downsample.conv.bias" not in s
    assert s["levels.2.downsample.norm.1.weight"] == (512,)
    assert s["levels.3.norm.0.weight"] == (512,)  # post_norm False: every level has its norm
    assert "levels.3.downsample.conv.weight" not in s
    assert s["conv_head.0.weight"] == (768, 512, 1, 1)
    assert s["conv_head.1.0.running_mean"] == (768,)
    assert s["conv_head.1.0.num_batches_tracked"] == ()
    assert s["head.weight"] == (1000, 768)
    assert not any("gamma" in k or "res_post_norm" in k or "clip" in k for k in s)


def test_s_l_names_and_shapes(meta_models):
    s = _shapes(meta_models["s"])
    assert s["levels.1.blocks.3.gamma1"] == (160,)
    assert s["levels.1.blocks.3.gamma2"] == (160,)
    assert not any(k.startswith("levels.0.norm.") for k in s)  # post_norm without centre scale
    assert s["head.weight"] == (1000, 960)
    large = meta_models["l"]
    assert large.levels[0].blocks[0].dcn.offset_scale == 2.0
    assert _shapes(large)["levels.3.blocks.4.dcn.input_proj.weight"] == (1280, 1280)


def test_h_names_and_shapes(meta_models):
    model = meta_models["h"]
    s = _shapes(model)
    assert s["levels.0.blocks.0.dcn.dw_conv.0.weight"] == (320, 1, 5, 5)
    assert s["levels.2.blocks.31.res_post_norm1.0.weight"] == (1280,)
    assert s["levels.2.blocks.0.dcn.center_feature_scale_proj_weight"] == (40, 1280)
    assert s["levels.2.blocks.0.dcn.center_feature_scale_proj_bias"] == (40,)
    assert s["levels.2.post_norms.0.0.weight"] == (1280,)
    assert s["levels.2.post_norms.4.0.bias"] == (1280,)
    assert "levels.2.post_norms.5.0.weight" not in s
    assert s["dcnv3_head_x4.0.weight"] == (4096, 2560, 1, 1)
    assert s["dcnv3_head_x3.weight"] == (1024, 1280, 1, 1)
    assert s["clip_projector.norm1_q.0.weight"] == (1024,)
    assert s["clip_projector.cross_dcn.q.weight"] == (1024, 1024)
    assert s["clip_projector.cross_dcn.k_bias"] == (1024,)
    assert "clip_projector.cross_dcn.k.bias" not in s
    assert s["clip_projector.cross_dcn.proj.weight"] == (768, 1024)
    assert s["fc_norm.0.weight"] == (768,)
    assert s["head.weight"] == (1000, 768)
    assert not any(k.startswith("conv_head") or "gamma" in k for k in s)


def test_g_names_and_shapes(meta_models):
    s = _shapes(meta_models["g"])
    assert s["levels.2.post_norms.7.0.weight"] == (2048,)
    assert "levels.2.post_norms.8.0.weight" not in s
    assert s["levels.1.norm.0.weight"] == (1024,)  # post_norm but centre scale: norm kept
    assert not any("res_post_norm" in k for k in s)
    assert s["levels.3.blocks.3.dcn.center_feature_scale_proj_weight"] == (128, 4096)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero offsets, masks, gammas and centre scales, so the operators really sample
    between pixels and every branch contributes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dcn.offset." in name or ".dcn.mask." in name or "center_feature_scale" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
            elif "gamma" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("kwargs", [SMALL_T, SMALL_S, SMALL_H], ids=["t-like", "s-like", "h-like"])
def test_compiled_op_matches_reference(kwargs):
    fast = InternImage(core_op="DCNv3", **kwargs).double().eval()
    _randomise(fast)
    slow = InternImage(core_op="DCNv3_pytorch", **kwargs).double().eval()
    slow.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        a, b = fast(x), slow(x)
    assert a.shape == (2, kwargs["num_classes"])
    assert a.abs().max() > 1e-3  # not a trivially zero output
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_offsets_change_the_output():
    model = InternImage(core_op="DCNv3_pytorch", **SMALL_T).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        _randomise(model)
        after = model(x)
    assert (before - after).abs().max() > 1e-6


@pytest.mark.parametrize("kwargs", [SMALL_T, SMALL_H], ids=["t-like", "h-like"])
def test_forward_multiscale_shapes(kwargs):
    model = InternImage(**kwargs).eval()
    with torch.no_grad():
        feats = model.forward_multiscale(torch.randn(2, 3, 64, 96))
        pooled = model.forward_features(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]
    assert all(f.is_contiguous() for f in feats)
    width = 768 if kwargs.get("use_clip_projector") else int(128 * 1.5)
    assert pooled.shape == (2, width)


def test_headless_model_returns_features():
    model = InternImage(**{**SMALL_T, "num_classes": 0}).eval()
    assert isinstance(model.head, torch.nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)


@pytest.mark.parametrize("kwargs", [SMALL_S, SMALL_H], ids=["s-like", "h-like"])
def test_gradient_checkpointing_gives_the_same_grads(kwargs):
    plain = InternImage(core_op="DCNv3_pytorch", **kwargs).double()
    _randomise(plain)
    cp = InternImage(core_op="DCNv3_pytorch", with_cp=True, **kwargs).double()
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, cp):
        model.train()
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert "levels.0.blocks.0.dcn.offset.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-12, msg=name)
    assert all(block.with_cp for level in cp.levels for block in level.blocks)


def test_layer_decay_scales():
    model = InternImage(**SMALL_T)  # depths 1,1,2,1: 5 blocks, ids 0..4
    r = 0.5
    scales = model.layer_decay_scales(r)
    assert set(scales) == {n for n, _ in model.named_parameters()}
    assert scales["patch_embed.conv1.weight"] == r ** 4
    assert scales["patch_embed.norm2.1.bias"] == r ** 4
    assert scales["levels.0.blocks.0.dcn.offset.weight"] == r ** 4
    assert scales["levels.0.downsample.conv.weight"] == r ** 3  # = levels.1.blocks.0
    assert scales["levels.0.norm.0.weight"] == r ** 3
    assert scales["levels.1.blocks.0.mlp.fc1.weight"] == r ** 3
    assert scales["levels.1.downsample.norm.1.weight"] == r ** 2  # = levels.2.blocks.0
    assert scales["levels.2.blocks.0.norm1.0.weight"] == r ** 2
    assert scales["levels.2.blocks.1.dcn.input_proj.weight"] == r ** 1
    assert scales["levels.2.downsample.conv.weight"] == 1.0  # = levels.3.blocks.0, the last block
    assert scales["levels.3.blocks.0.mlp.fc2.bias"] == 1.0
    assert scales["levels.3.norm.0.weight"] == 1.0
    assert scales["conv_head.0.weight"] == 1.0
    assert scales["head.weight"] == 1.0 and scales["head.bias"] == 1.0


def test_layer_decay_scales_published_t(meta_models):
    scales = meta_models["t"].layer_decay_scales(0.9)  # 30 blocks
    assert scales["patch_embed.conv1.weight"] == pytest.approx(0.9 ** 29)
    assert scales["levels.0.blocks.0.norm1.0.weight"] == pytest.approx(0.9 ** 29)
    assert scales["levels.1.downsample.conv.weight"] == pytest.approx(0.9 ** 21)  # levels.2.blocks.0
    assert scales["levels.3.blocks.3.mlp.fc1.weight"] == 1.0
    assert scales["levels.3.blocks.0.mlp.fc1.weight"] == pytest.approx(0.9 ** 3)


def test_no_weight_decay_is_the_1d_parameters():
    model = InternImage(**SMALL_H)
    names = model.no_weight_decay()
    assert "clip_projector.cross_dcn.q_bias" in names
    assert "levels.0.blocks.0.norm1.0.weight" in names
    assert "levels.0.blocks.0.dcn.offset.weight" not in names
    assert names == {n for n, p in model.named_parameters() if p.ndim <= 1}


def test_drop_path_rises_linearly():
    model = InternImage(**{**SMALL_T, "drop_path_rate": 0.4})
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for level in model.levels for b in level.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_init_follows_model_md():
    model = InternImage(**SMALL_S)
    dcn = model.levels[1].blocks[0].dcn
    assert torch.count_nonzero(dcn.offset.weight) == 0 and torch.count_nonzero(dcn.mask.bias) == 0
    assert torch.count_nonzero(dcn.input_proj.bias) == 0
    assert torch.all(model.levels[0].blocks[0].gamma1 == 1e-5)
    assert torch.all(model.patch_embed.norm1[1].weight == 1) and model.patch_embed.norm1[1].eps == 1e-6
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(model.head.bias) == 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(core_op="DCNv4"), ValueError, "core_op"),
    (dict(depths=(1, 1, 2)), ValueError, "depths"),
    (dict(drop_path_type="cosine"), ValueError, "drop_path_type"),
    (dict(foo=1), TypeError, "foo"),
    (dict(groups=(3, 2, 4, 8)), ValueError, "divisible"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        InternImage(**{**SMALL_T, **kwargs})


def test_state_dict_round_trip_between_core_ops():
    a = InternImage(core_op="DCNv3", **SMALL_H)
    b = InternImage(core_op="DCNv3_pytorch", **SMALL_H)
    result = b.load_state_dict(copy.deepcopy(a.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
