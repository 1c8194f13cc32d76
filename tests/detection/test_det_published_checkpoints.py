"""Published DINO checkpoints (mmdet 2 layout) load into our mmdet 3 DINO models with no
separate step: for every DINO config a checkpoint in the published layout (built from the
model's own keys by the inverse map) converts to exactly the model's keys and shapes; on
DINO-T every value lands in its place through mmengine's loader, the prediction on a real
photo is unchanged by the round trip, and leftover/missing keys are errors naming them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DETECTION, REPO, script_env
from mmengine.config import Config

from dense_common import published_keys

DINO_CONFIGS = sorted(p for p in (DETECTION / "configs").rglob("dino_*.py") if "_base_" not in p.parts)
T_CONFIG = DETECTION / "configs/coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py"
PHOTO_SIZE = 256  # the test scale of the round-trip prediction (small: CPU)


def _build(cfg_model, device: str = "cpu"):
    import mmdet_custom  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    with torch.device(device):
        return MODELS.build(copy.deepcopy(cfg_model))  # building edits the dict (mmdet's DETRs)


def _published_form(path: Path) -> dict:
    """(cb, ffn_split) as the published checkpoint of this config stores it."""
    return dict(cb="cbinternimage" in path.name, ffn_split=4 if "internimage_g" in path.name else None)


def test_there_is_a_dino_config_of_every_published_family():
    names = {p.stem for p in DINO_CONFIGS}
    assert {"dino_4scale_internimage_t_1x_coco_layer_wise_lr",
            "dino_4scale_cbinternimage_h_objects365_coco_ss",
            "dino_4scale_internimage_g_objects365_coco_ss", "dino_4scale_cbinternimage_h_objects365_voc12",
            "dino_4scale_cbinternimage_h_objects365_lvis_val_ss"} <= names
    assert len(DINO_CONFIGS) == 11


@pytest.mark.parametrize("path", DINO_CONFIGS, ids=lambda p: p.stem)
def test_published_layout_converts_to_exactly_the_model_keys(path):
    cfg = Config.fromfile(str(path))
    model = _build(cfg.model, device="meta")
    state = model.state_dict()
    form = _published_form(path)
    published = published_keys.to_published_state_dict(state, model="dino", **form)
    assert published_keys.detect_layout(published) == published_keys.PUBLISHED_DINO
    # the published names: the whole transformer on the head, mmdet 2's attentions/ffns lists
    assert "bbox_head.transformer.level_embeds" in published
    assert "bbox_head.transformer.decoder.layers.5.attentions.1.sampling_offsets.weight" in published
    assert "bbox_head.label_embedding.weight" in published
    assert not any(k.startswith(("encoder.", "decoder.", "dn_query_generator.")) for k in published)
    if form["cb"]:
        assert any(k.startswith("neck.0.convs.") for k in published)
    if form["ffn_split"]:
        assert "bbox_head.transformer.encoder.layers.0.ffns.0.fc1_3.weight" in published
        assert "bbox_head.transformer.decoder.layers.0.ffns.0.fc2_bias" in published
    converted, layout = published_keys.convert_state_dict(published)
    assert layout == published_keys.PUBLISHED_DINO
    assert sorted(converted) == sorted(state)
    assert all(tuple(converted[k].shape) == tuple(state[k].shape) for k in state)


def _distinct_values(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor filled with values of its own: tensor i holds i + U(0, 0.5)."""
    generator = torch.Generator().manual_seed(0)
    return {k: (i + 0.5 * torch.rand(v.shape, generator=generator)).to(v.dtype) if v.is_floating_point()
            else v.clone() for i, (k, v) in enumerate(state.items())}


@pytest.fixture(scope="module")
def dino_t():
    cfg = Config.fromfile(str(T_CONFIG))
    cfg.model.backbone.init_cfg = None
    return cfg, _build(cfg.model).eval()


def test_every_value_lands_in_its_place_through_mmengine(dino_t, tmp_path):
    from mmengine.runner import load_checkpoint

    cfg, model = dino_t
    values = _distinct_values(model.state_dict())
    published = published_keys.to_published_state_dict(values, model="dino")
    path = tmp_path / "published_dino_t.pth"
    torch.save({"state_dict": published, "meta": {"note": "published layout"}}, path)
    target = _build(cfg.model)
    load_checkpoint(target, str(path), map_location="cpu")
    loaded = target.state_dict()
    for key, value in values.items():
        assert torch.equal(loaded[key], value), key


def test_a_detector_init_cfg_loads_a_published_file(dino_t, tmp_path):
    """``init_cfg=dict(type='Pretrained', checkpoint=...)`` on the detector: mmengine's
    PretrainedInit goes through the same conversion. (mmdet 3's ``DINO.init_weights`` then
    re-initialises the encoder, decoder, level_embed, query_embedding and
    memory_trans_fc.weight after any pretrained load: use ``load_from`` for a whole DINO.)"""
    cfg, model = dino_t
    values = _distinct_values(model.state_dict())
    path = tmp_path / "published.pth"
    torch.save({"state_dict": published_keys.to_published_state_dict(values, model="dino")}, path)
    target = _build(dict(cfg.model, init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    target.init_weights()
    loaded = target.state_dict()
    reinitialised_by_mmdet = ("level_embed", "query_embedding.weight", "memory_trans_fc.weight")
    kept = [k for k in values
            if k not in reinitialised_by_mmdet and not k.startswith(("encoder.", "decoder."))]
    assert len(kept) > len(values) // 2 and any(k.startswith("dn_query_generator.") for k in kept)
    assert all(torch.equal(loaded[k], values[k]) for k in kept)


def test_leftover_and_missing_keys_are_errors_naming_them(dino_t):
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from dense_common.checkpoint_conversion import PublishedCheckpointError

    _, model = dino_t
    published = published_keys.to_published_state_dict(model.state_dict(), model="dino")
    extra = dict(published, **{"bbox_head.transformer.pos_trans.weight": torch.zeros(1)})
    with pytest.raises(PublishedCheckpointError, match=r"bbox_head\.transformer\.pos_trans\.weight"):
        _load_checkpoint_to_model(model, {"state_dict": extra})
    missing = dict(published)
    del missing["bbox_head.transformer.enc_output_norm.weight"]
    with pytest.raises(PublishedCheckpointError, match=r"memory_trans_norm\.weight"):
        _load_checkpoint_to_model(model, {"state_dict": missing})
    wrong = dict(published, **{"bbox_head.transformer.level_embeds": torch.zeros(5, 256)})
    with pytest.raises(PublishedCheckpointError, match=r"level_embed \(5, 256\) vs model \(4, 256\)"):
        _load_checkpoint_to_model(model, {"state_dict": wrong})


def test_a_different_class_count_reinitialises_only_the_class_tensors(dino_t):
    """Fine-tuning from the 80-class Objects365 detector: cls_branches and the DN label
    embedding keep the model's own values, everything else loads."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    cfg, model = dino_t
    state = model.state_dict()
    values = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    published = published_keys.to_published_state_dict(values, model="dino")
    for key in list(published):
        if key.startswith("bbox_head.cls_branches.") or key == "bbox_head.label_embedding.weight":
            published[key] = torch.zeros((7,) + tuple(published[key].shape[1:]))
    target = _build(cfg.model).eval()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    _load_checkpoint_to_model(target, {"state_dict": published})
    after = target.state_dict()
    for key in state:
        class_tensor = key.startswith("bbox_head.cls_branches.") or key.startswith("dn_query_generator.")
        assert torch.equal(after[key], before[key] if class_tensor else values[key]), key


def test_our_own_and_mask_rcnn_files_pass_through_unchanged():
    from dense_common.checkpoint_conversion import convert_for_model

    cfg = Config.fromfile(str(DETECTION / "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"))
    model = _build(cfg.model, device="meta")
    checkpoint = {"state_dict": model.state_dict()}
    assert published_keys.detect_layout(checkpoint["state_dict"]) == published_keys.CURRENT
    assert convert_for_model(checkpoint, model) == (checkpoint, None)


def test_a_file_with_exactly_the_models_keys_is_never_converted():
    """A model whose own names look published (a driving model's DETR head under
    ``bbox_head.transformer.*``) loads its own files unchanged."""
    from dense_common.checkpoint_conversion import convert_for_model

    model = torch.nn.Module()
    model.bbox_head = torch.nn.Module()
    model.bbox_head.transformer = torch.nn.Linear(2, 2)
    checkpoint = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
    assert published_keys.detect_layout(model.state_dict()) == published_keys.PUBLISHED_DINO
    assert convert_for_model(checkpoint, model) == (checkpoint, None)


def test_prediction_on_a_photo_survives_the_round_trip(dino_t, tmp_path):
    """Original weights vs the same weights saved in the published layout and loaded by
    mmdet's init_detector (image_demo.py / test.py's path): identical detections."""
    import skimage.data
    from mmdet.apis import inference_detector, init_detector
    from PIL import Image

    cfg, model = dino_t
    torch.manual_seed(0)
    for param in model.parameters():  # random but not degenerate weights
        param.data.normal_(0, 0.02)
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    cfg.test_dataloader.dataset.pipeline[1].scale = (PHOTO_SIZE, PHOTO_SIZE)
    cfg.model.test_cfg.max_per_img = 20
    ours = tmp_path / "ours.pth"
    torch.save({"state_dict": model.state_dict()}, ours)
    published = tmp_path / "published.pth"
    torch.save({"state_dict": published_keys.to_published_state_dict(model.state_dict(), model="dino")},
               published)
    results = []
    for checkpoint in (ours, published):
        detector = init_detector(copy.deepcopy(cfg), str(checkpoint), device="cpu")
        with torch.no_grad():
            results.append(inference_detector(detector, str(photo)).pred_instances)
    reference, round_trip = results
    assert len(reference.bboxes) == 20
    torch.testing.assert_close(round_trip.bboxes, reference.bboxes, rtol=0, atol=0)
    torch.testing.assert_close(round_trip.scores, reference.scores, rtol=0, atol=0)
    assert torch.equal(round_trip.labels, reference.labels)


def test_convert_checkpoint_tool_writes_the_converted_file(tmp_path):
    state = {"backbone.patch_embed.conv1.weight": torch.randn(4, 3, 3, 3),
             "bbox_head.transformer.level_embeds": torch.randn(4, 8),
             "bbox_head.transformer.encoder.layers.0.attentions.0.value_proj.weight": torch.randn(8, 8),
             "neck.0.convs.0.conv.weight": torch.randn(8, 4, 1, 1)}
    source, target = tmp_path / "published.pth", tmp_path / "out" / "converted.pth"
    torch.save({"state_dict": state, "meta": {"CLASSES": ["a", "b"], "config": object.__doc__}}, source)
    tool = str(DETECTION / "tools/convert_checkpoint.py")
    proc = subprocess.run([sys.executable, tool, str(source), str(target)], env=script_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from classification.models.checkpoint import read_checkpoint

    converted = read_checkpoint(target, trust=False)
    assert sorted(converted["state_dict"]) == ["backbone.patch_embed.conv1.weight",
                                               "encoder.layers.0.self_attn.value_proj.weight", "level_embed",
                                               "neck.convs.0.conv.weight"]
    assert torch.equal(converted["state_dict"]["level_embed"], state["bbox_head.transformer.level_embeds"])
    assert converted["meta"]["CLASSES"] == ["a", "b"]
    assert converted["meta"]["converted_from"] == "published_dino"
    assert [p.name for p in target.parent.iterdir()] == ["converted.pth"]  # no temporary left behind
    again = subprocess.run([sys.executable, tool, str(target), str(tmp_path / "x.pth")], env=script_env(),
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already in the current layout: nothing to convert" in again.stderr
    assert not (tmp_path / "x.pth").exists()


def test_efficient_ffn_computes_the_plain_ffn():
    import mmdet_custom  # noqa: F401
    from mmcv.cnn.bricks.transformer import FFN
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    plain = FFN(embed_dims=16, feedforward_channels=32, ffn_drop=0.0).eval()
    split = MODELS.build(dict(type="EfficientFFN", embed_dims=16, feedforward_channels=32, ffn_drop=0.0,
                              split=4, use_checkpoint=True)).eval()
    split.load_state_dict(plain.state_dict())  # the same parameters
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(split(x), plain(x), rtol=1e-5, atol=1e-6)
    split.train()
    x.requires_grad_(True)
    split(x).sum().backward()  # checkpointed slices back-propagate
    assert split.layers[0][0].weight.grad is not None
    with pytest.raises(ValueError, match="split must divide"):
        MODELS.build(dict(type="EfficientFFN", embed_dims=16, feedforward_channels=30, split=4))
