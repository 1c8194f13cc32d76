"""CBInternImage (two trunks, fused through 1x1 convs and zero-initialised gammas) and
CBDINO (mmdet's DINO supervising both trunks)."""

from __future__ import annotations

import pytest
import torch
from conftest import DETECTION

SMALL = dict(core_op="DCNv3", channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8], mlp_ratio=4.0,
             drop_path_rate=0.0, layer_scale=None, offset_scale=1.0, post_norm=False)


def _cb(**overrides):
    import mmdet_custom  # noqa: F401
    from mmdet.registry import MODELS

    return MODELS.build(dict(type="CBInternImage", **{**SMALL, **overrides}))


def test_forward_returns_both_trunks_at_the_selected_levels():
    model = _cb(out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        assist, lead = model(torch.randn(2, 3, 72, 100))  # odd level sizes: 18x25 -> 9x13 -> 5x7 -> 3x4
    for features in (assist, lead):
        assert [tuple(f.shape) for f in features] == [(2, 32, 9, 13), (2, 64, 5, 7), (2, 128, 3, 4)]
    assert model.out_channels == [32, 64, 128]


def test_zero_gammas_make_the_lead_trunk_a_plain_internimage():
    from mmdet.registry import MODELS

    model = _cb().eval()
    plain = MODELS.build(dict(type="InternImage", out_indices=(0, 1, 2, 3), **SMALL)).eval()
    lead_weights = model.cb_modules[1].state_dict()
    plain.load_state_dict({**{k: v for k, v in lead_weights.items() if not k.startswith("gamma")},
                           **{k: v for k, v in model.cb_modules[0].state_dict().items()
                              if k.startswith("patch_embed")}})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, lead = model(x)
        reference = plain(x)
        for a, b in zip(lead, reference[1:]):
            torch.testing.assert_close(a, b)
        model.cb_modules[1].gamma2.fill_(1.0)  # once trained, the assisting trunk feeds in
        _, fed = model(x)
    assert not torch.allclose(fed[1], reference[2])


def test_parameter_names_follow_the_published_checkpoints():
    names = dict(_cb().named_parameters())
    assert "cb_modules.0.patch_embed.conv1.weight" in names
    assert not any(n.startswith("cb_modules.1.patch_embed") for n in names)
    assert [tuple(names[f"cb_modules.1.gamma{i}"].shape) for i in range(4)] == [(16,), (32,), (64,), (128,)]
    assert all(not names[f"cb_modules.1.gamma{i}"].any() for i in range(4))
    assert tuple(names["cb_linears.0.3.weight"].shape) == (16, 128, 1, 1)  # level 3 -> level 0 width
    assert "cb_linears.3.0.weight" not in names  # same level: identity


def test_cbdino_trains_on_both_trunks_and_predicts_from_the_lead():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    register_all_modules()
    cfg = Config.fromfile(str(DETECTION / "configs/coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py"))
    model_cfg = cfg.model
    model_cfg.backbone = dict(type="CBInternImage", out_indices=(1, 2, 3), **SMALL)
    model_cfg.neck.in_channels = [32, 64, 128]
    model_cfg.num_queries = 20
    model_cfg.encoder.num_layers = model_cfg.decoder.num_layers = 1
    model_cfg.dn_cfg.group_cfg.num_dn_queries = 10
    model = MODELS.build(model_cfg)
    model.init_weights()

    def sample() -> DetDataSample:
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), batch_input_shape=(64, 64),
                                        pad_shape=(64, 64), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]), labels=torch.tensor([3]))
        return s

    inputs = torch.randn(2, 3, 64, 64)
    calls = []
    model.bbox_head.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[1]))
    torch.manual_seed(0)
    losses = model.loss(inputs, [sample(), sample()])
    assert torch.isfinite(sum(v for k, v in losses.items() if "loss" in k))
    assert calls == [2, 2]  # one head pass per trunk over the transformer's 2 images x 2 trunks
    # published naming and weighting: the assisting trunk's losses x cb_first_weight (0.5)
    assert {"loss_cls0_w0.5", "loss_bbox0_w0.5", "loss_cls1", "loss_bbox1", "dn_loss_cls1"} <= set(losses)
    model.cb_first_weight = 1.0
    torch.manual_seed(0)
    unweighted = model.loss(inputs, [sample(), sample()])
    torch.testing.assert_close(losses["loss_cls0_w0.5"], 0.5 * unweighted["loss_cls0"])
    torch.testing.assert_close(losses["loss_cls1"], unweighted["loss_cls1"])
    model.eval()
    with torch.no_grad():
        results = model.predict(inputs, [sample(), sample()])
    assert len(results) == 2 and len(results[0].pred_instances.bboxes) <= 300
    assert calls[-1] == 2  # prediction: the lead trunk only


def test_published_arguments():
    # per-trunk out_indices: the assisting trunk's extra first level feeds the fusion only
    model = _cb(out_indices=[(0, 1, 2, 3), (1, 2, 3)], cb_zero_init=True, cb_del_stages=1).eval()
    reference = _cb(out_indices=(1, 2, 3)).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, expected in zip(model(x), reference(x)):
            assert len(got) == 3
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b)
    assert model.out_channels == [32, 64, 128]
    # cb_del_stages=2: level 0 of the lead trunk gets no assisting input (no level-0 convs)
    partial = _cb(cb_del_stages=2)
    assert len(partial.cb_linears[0]) == 0 and len(partial.cb_linears[1]) == 3
    # cb_del_stages=-1: the lead trunk keeps its own stem
    own_stem = dict(_cb(cb_del_stages=-1).named_parameters())
    assert "cb_modules.1.patch_embed.conv1.weight" in own_stem
    with pytest.raises(ValueError, match="cb_zero_init=False"):
        _cb(cb_zero_init=False)


def test_cbdino_freezing_rules_apply_to_the_published_names():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(DETECTION / "configs/coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py"))
    cfg.model.backbone = dict(type="CBInternImage", out_indices=[(0, 1, 2, 3), (1, 2, 3)], **SMALL)
    cfg.model.neck.in_channels = [32, 64, 128]
    cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 1
    import copy

    def build(**extra):  # building edits the dict (mmdet's DETRs): a copy each time
        return MODELS.build(dict(copy.deepcopy(cfg.model), **extra))

    model = build(rule="freeze_backbone_encoder")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("backbone.", "encoder.")) for n in trainable)  # published 'encoder' in name
    assert any(n.startswith("decoder.") for n in trainable) and any(n.startswith("neck.") for n in trainable)
    model = build(rule="freeze_backbone_expect_level_4")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable and all(n.startswith("backbone.cb_modules.1.levels.3") for n in trainable)
    with pytest.raises(ValueError, match="rule must be None or one of"):
        build(rule="freeze_everything")


def test_use_dcn_v4_op_gives_the_same_outputs():
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    plain = MODELS.build(dict(type="InternImage", **SMALL)).eval()
    dcnv4 = MODELS.build(dict(type="InternImage", use_dcn_v4_op=True, **SMALL)).eval()
    assert dcnv4.use_dcn_v4_op is True
    dcnv4.load_state_dict(plain.state_dict())  # the same parameters
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(dcnv4(x), plain(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="use_dcn_v4_op must be True or False"):
        MODELS.build(dict(type="InternImage", use_dcn_v4_op="yes", **SMALL))


@pytest.mark.parametrize("bad", [dict(out_indices=(4,)), dict(frozen_stages=1),
                                 dict(out_indices=[(0, 1), (1, 2), (2, 3)]), dict(cb_del_stages=9)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        _cb(**bad)
