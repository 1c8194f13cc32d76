"""The InternImage backbone as mmdet builds it: feature shapes, published checkpoint
formats loading exactly through ``init_cfg``, and ``frozen_stages``."""

from __future__ import annotations

import pytest
import torch

T_ARGS = dict(type="InternImage", core_op="DCNv3", channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32],
              mlp_ratio=4.0, drop_path_rate=0.2, norm_layer="LN", layer_scale=1.0, offset_scale=1.0,
              post_norm=False, with_cp=False, out_indices=(0, 1, 2, 3))


def build(**overrides):
    import mmdet_custom  # noqa: F401  (registers InternImage)
    from mmdet.registry import MODELS

    return MODELS.build({**T_ARGS, **overrides})


def _randomised(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict unlike any initialisation (so a load that silently skips tensors shows)."""
    generator = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def test_forward_returns_nchw_features_at_strides_4_to_32():
    model = build(out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape) for f in features] == [(1, 128, 12, 16), (1, 256, 6, 8), (1, 512, 3, 4)]
    assert model.out_channels == [128, 256, 512]


@pytest.mark.parametrize("wrapping", ["detection", "classification"])
def test_published_checkpoint_formats_load_exactly(tmp_path, wrapping):
    source = build()
    weights = _randomised(source)
    assert any(k.endswith("blocks.0.gamma1") for k in weights)  # layer_scale=1.0: dense ckpts hold gammas
    if wrapping == "detection":  # a whole detector: trunk under backbone., plus neck/head tensors
        checkpoint = {"state_dict": {**{f"backbone.{k}": v for k, v in weights.items()},
                                     "neck.lateral_convs.0.conv.weight": torch.zeros(256, 64, 1, 1)},
                      "meta": {"epoch": 12}}
    else:  # a classification checkpoint: trunk plus classifier head, wrapped in 'model'
        checkpoint = {"model": {**weights, "conv_head.0.weight": torch.zeros(768, 512, 1, 1),
                                "head.weight": torch.zeros(1000, 768), "head.bias": torch.zeros(1000)}}
    path = tmp_path / "weights.pth"
    torch.save(checkpoint, path)

    model = build(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(loaded[key], value), key


def test_init_weights_reports_a_missing_checkpoint():
    model = build(init_cfg=dict(type="Pretrained", checkpoint="/nonexistent/internimage_t.pth"))
    with pytest.raises(FileNotFoundError, match="internimage_t.pth"):
        model.init_weights()


def test_frozen_stages_freezes_the_stem_and_first_levels():
    model = build(frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.levels[0], model.levels[1]]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in (model.levels[2], model.levels[3]):
        assert module.training and all(p.requires_grad for p in module.parameters())
    # a training step leaves the frozen weights unchanged
    before = {k: v.clone() for k, v in model.levels[1].state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(f.sum() for f in model(torch.randn(1, 3, 64, 64))).backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.levels[1].state_dict().items())


@pytest.mark.parametrize("bad", [dict(out_indices=(4,)), dict(frozen_stages=5),
                                 dict(init_cfg=dict(type="Normal"))])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        build(**bad)
