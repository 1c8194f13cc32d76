"""Published Mask2Former checkpoints (mmseg 0.x layout: mmdet 2's ``attentions`` / ``ffns``
lists, cross-attention first in the decoder layers) load into mmseg 1.2's Mask2FormerHead
with no separate step: for every Mask2Former config the published-layout state_dict
(built from the model's keys by the inverse map) converts to exactly the model's keys and
shapes; with a small backbone every value lands in its place through mmengine's loader;
UperNet/SegFormer files keep loading unchanged."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from seg_testutils import CONFIGS, ROOT, SEG

from dense_common import published_keys

MASK2FORMER = sorted(p for p in CONFIGS.rglob("mask2former_*.py") if "_base_" not in p.parts)
SMALL_BACKBONE = dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8], dw_kernel_size=None,
                      level2_post_norm=False, level2_post_norm_block_ids=None, res_post_norm=False,
                      center_feature_scale=False, init_cfg=None)


def _build(model_cfg, device: str = "cpu"):
    import mmseg_custom  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    with torch.device(device):
        return MODELS.build(copy.deepcopy(model_cfg))


def test_every_published_mask2former_config_is_covered():
    assert len(MASK2FORMER) == 10


@pytest.mark.parametrize("path", MASK2FORMER, ids=lambda p: p.stem)
def test_published_layout_converts_to_exactly_the_model_keys(path):
    model = _build(Config.fromfile(str(path)).model, device="meta")
    state = model.state_dict()
    published = published_keys.to_published_state_dict(state, model="mask2former")
    assert published_keys.detect_layout(published) == published_keys.PUBLISHED_MASK2FORMER
    # mmseg 0.x names: cross-attention is attentions.0, self-attention attentions.1
    assert "decode_head.transformer_decoder.layers.8.attentions.0.attn.in_proj_weight" in published
    assert "decode_head.transformer_decoder.layers.8.attentions.1.attn.out_proj.weight" in published
    assert "decode_head.pixel_decoder.encoder.layers.5.attentions.0.sampling_offsets.weight" in published
    assert "decode_head.pixel_decoder.encoder.layers.5.ffns.0.layers.0.0.weight" in published
    assert not any(".self_attn." in k or ".cross_attn." in k or ".ffn." in k for k in published)
    converted, layout = published_keys.convert_state_dict(published)
    assert layout == published_keys.PUBLISHED_MASK2FORMER
    assert sorted(converted) == sorted(state)
    assert all(tuple(converted[k].shape) == tuple(state[k].shape) for k in state)


@pytest.fixture(scope="module")
def small_mask2former():
    cfg = Config.fromfile(str(CONFIGS / "ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py"))
    cfg.model.backbone.update(SMALL_BACKBONE)
    cfg.model.decode_head.in_channels = [16, 32, 64, 128]
    return cfg, _build(cfg.model).eval()


def test_every_value_lands_in_its_place_and_cross_and_self_attention_do_not_swap(small_mask2former, tmp_path):
    from mmengine.runner import load_checkpoint

    cfg, model = small_mask2former
    generator = torch.Generator().manual_seed(0)
    values = {k: (i + 0.5 * torch.rand(v.shape, generator=generator)) if v.is_floating_point() else v.clone()
              for i, (k, v) in enumerate(model.state_dict().items())}
    published = published_keys.to_published_state_dict(values, model="mask2former")
    # cross- and self-attention have the same shapes: a swapped map would load silently
    cross = "decode_head.transformer_decoder.layers.0.cross_attn.attn.in_proj_weight"
    assert torch.equal(published["decode_head.transformer_decoder.layers.0.attentions.0.attn.in_proj_weight"],
                       values[cross])
    path = tmp_path / "published_mask2former.pth"
    torch.save({"state_dict": published, "meta": {}}, path)
    target = _build(cfg.model)
    load_checkpoint(target, str(path), map_location="cpu")
    loaded = target.state_dict()
    for key, value in values.items():
        assert torch.equal(loaded[key], value), key


def test_leftover_keys_are_errors_naming_them(small_mask2former):
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from dense_common.checkpoint_conversion import PublishedCheckpointError

    _, model = small_mask2former
    published = published_keys.to_published_state_dict(model.state_dict(), model="mask2former")
    published["decode_head.conv_seg.weight"] = torch.zeros(150, 256, 1, 1)  # BaseDecodeHead's, unused
    with pytest.raises(PublishedCheckpointError, match=r"decode_head\.conv_seg\.weight"):
        _load_checkpoint_to_model(model, {"state_dict": published})


def test_upernet_files_pass_through_unchanged():
    from dense_common.checkpoint_conversion import convert_for_model

    cfg = Config.fromfile(str(CONFIGS / "ade20k/upernet_internimage_t_512_160k_ade20k.py"))
    model = _build(cfg.model, device="meta")
    checkpoint = {"state_dict": model.state_dict()}
    assert published_keys.detect_layout(checkpoint["state_dict"]) == published_keys.CURRENT
    assert convert_for_model(checkpoint, model) == (checkpoint, None)


def test_convert_checkpoint_tool(tmp_path):
    state = {"decode_head.transformer_decoder.layers.0.attentions.1.attn.in_proj_bias": torch.randn(6),
             "decode_head.query_feat.weight": torch.randn(2, 3)}
    source, target = tmp_path / "m2f.pth", tmp_path / "converted.pth"
    torch.save({"state_dict": state}, source)
    tool = str(SEG / "tools/convert_checkpoint.py")
    proc = subprocess.run([sys.executable, tool, str(source), str(target)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from classification.models.checkpoint import read_checkpoint

    converted = read_checkpoint(target, trust=False)["state_dict"]
    assert sorted(converted) == ["decode_head.query_feat.weight",
                                 "decode_head.transformer_decoder.layers.0.self_attn.attn.in_proj_bias"]
