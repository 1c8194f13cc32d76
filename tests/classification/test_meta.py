"""The published iNat18 meta-former (MODEL.TYPE intern_image_meta_former): its state_dict
against the published checkpoint's key list, the date/location encodings and the forward
written from the spec, the iNat18 json dataset's [img, temporal, spatial] items, and the
trainer end to end on a tiny iNat18-format dataset of real photo crops."""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from photo_crops import CLASSES, photo_crops

from classification import main as trainer
from classification.config import load_config_file
from classification.data import build_loader, model_num_classes
from classification.data.datasets import read_inat_json, read_inat_meta
from classification.models import (
    InternImage,
    InternImageMetaFormer,
    build_model,
    encode_spatial,
    encode_temporal,
    load_pretrained,
    load_pretrained_meta,
)
from classification.models.intern_image_meta_former import meta_parameter_names
from classification.utils import epoch_history, load_checkpoint_file

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
INAT18_YAML = REPO / "classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml"
TINY = dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch", num_classes=5,
            drop_path_rate=0.0)


# ----------------------------------------------------------------------------- published layout
def _published_keys() -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in (SHARED / "inat18_metaformer_keys.txt").read_text().splitlines():
        match = re.fullmatch(r"(\S+) \(([\d, ]*)\)", line.strip())
        assert match, line
        entries.append((match[1], tuple(int(d) for d in match[2].replace(" ", "").split(",") if d)))
    return entries


def test_published_yaml_builds_the_published_state_dict():
    """Key for key, shape for shape and in order, on the meta device (no memory)."""
    config = load_config_file(str(INAT18_YAML))
    assert config.MODEL.TYPE == "intern_image_meta_former" and config.DATA.DATASET == "inat18"
    config.defrost()
    config.MODEL.NUM_CLASSES = model_num_classes(config)  # 8142, as the iNat18 loader sets it
    with torch.device("meta"):
        model = build_model(config)
    assert isinstance(model, InternImageMetaFormer) and model.meta_dim == 64
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    published = _published_keys()
    assert len(ours) == len(published) == 1385
    assert ours == published


def test_unknown_model_type_is_named():
    config = load_config_file(str(INAT18_YAML))
    config.defrost()
    config.MODEL.TYPE = "intern_image_meta"  # the type this project used before
    with pytest.raises(ValueError, match="intern_image_meta_former"):
        build_model(config)


# ----------------------------------------------------------------------------- encodings
def test_temporal_encoding():
    for date, month in (("2017-07-04 10:31:00+00:00", 7), ("2018-12-31", 12), ("2016-01-01T00:00", 1),
                        (datetime.date(2017, 3, 9), 3), (datetime.datetime(2017, 10, 1, 23), 10)):
        a = 2 * math.pi * month / 12
        torch.testing.assert_close(encode_temporal(date), torch.tensor([math.sin(a), math.cos(a), 0.0, 0.0]))
    for bad in (None, "", "unknown", "2017-02-30", "07/04/2017", 20170704):
        assert torch.equal(encode_temporal(bad), torch.zeros(4)), bad
    assert encode_temporal("2017-07-04").dtype == torch.float32


def test_spatial_encoding():
    for lat, lon in ((45.0, 90.0), (-33.9, 151.2), ("12.5", "-3"), (89.0, -179.0)):
        a, b = math.radians(float(lat)), math.radians(float(lon))
        expected = torch.tensor([math.cos(a) * math.cos(b), math.cos(a) * math.sin(b), math.sin(a)])
        got = encode_spatial(lat, lon)
        torch.testing.assert_close(got, expected)
        assert float(got.norm()) == pytest.approx(1.0, abs=1e-6)
    # missing or zero latitude or longitude -> no location (the published convention)
    for lat, lon in ((None, 10.0), (10.0, None), (0.0, 10.0), (10.0, 0), ("abc", 1.0), (float("nan"), 1.0)):
        assert torch.equal(encode_spatial(lat, lon), torch.zeros(3)), (lat, lon)


# ----------------------------------------------------------------------------- forward
def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("meta_") or ".dcn.offset." in name or ".dcn.mask." in name:
                p.normal_(0, 0.3)
    return model.eval()


def _spec_meta_logits(state: dict, temporal: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """The metadata logits written straight from fidelity.md with functional ops."""
    def branch(prefix: str, x: torch.Tensor) -> torch.Tensor:
        def lin(name, v):
            return F.linear(v, state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"])

        def ln(name, v, eps=1e-5):
            weight, bias = state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"]
            return F.layer_norm(v, v.shape[-1:], weight, bias, eps)

        x = ln("2", F.relu(lin("0", x)))  # Linear, ReLU, LayerNorm(64, eps 1e-5)
        y = ln("3.norm_fn2", F.relu(lin("3.w2", ln("3.norm_fn1", F.relu(lin("3.w1", x))))))
        return x + y  # MetaEncoder

    cat = torch.cat([branch("meta_head_1", temporal), branch("meta_head_2", spatial)], dim=-1)
    normed = F.layer_norm(cat, (cat.shape[-1],), state["meta_norm.weight"], state["meta_norm.bias"], 1e-6)
    return F.linear(normed, state["meta_head.weight"], state["meta_head.bias"])


@pytest.mark.parametrize("clip", [False, True], ids=["conv-head", "clip-projector"])
def test_forward_is_image_logits_plus_meta_logits(clip):
    model = _randomised(InternImageMetaFormer(**TINY, use_clip_projector=clip, meta_dim=8)).double()
    state = model.state_dict()
    plain = InternImage(**TINY, use_clip_projector=clip).double().eval()
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("meta_")}, strict=True)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    temporal = torch.stack([encode_temporal(d) for d in ("2017-05-01", None, "2018-11-30")]).double()
    spatial = torch.stack([encode_spatial(*p) for p in ((40, -3), (None, None), (-20, 150))]).double()
    with torch.no_grad():
        expected = plain(x) + _spec_meta_logits(state, temporal, spatial)
        torch.testing.assert_close(model([x, temporal, spatial]), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model((x, temporal, spatial)), expected, rtol=1e-10, atol=1e-10)
        # a bare image batch means "no metadata": zero encodings, as the dataset gives
        zeros = plain(x) + _spec_meta_logits(state, torch.zeros_like(temporal), torch.zeros_like(spatial))
        torch.testing.assert_close(model(x), zeros, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(expected, zeros)  # the metadata changes the logits


def test_bad_inputs_and_gradients():
    model = InternImageMetaFormer(**TINY)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\[img, temporal, spatial\]"):
        model([x, torch.zeros(2, 4)])
    with pytest.raises(ValueError, match=r"temporal must be \(N, 4\)"):
        model([x, torch.zeros(2, 3), torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="do not match the 2 images"):
        model([x, torch.zeros(3, 4), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="num_classes > 0"):
        InternImageMetaFormer(**{**TINY, "num_classes": 0})
    model([x, torch.randn(2, 4), torch.randn(2, 3)]).sum().backward()
    meta = [p for k, p in model.named_parameters() if k.startswith("meta_")]
    assert meta and all(p.grad is not None and p.grad.abs().sum() > 0 for p in meta)
    model.reset_classifier(7)
    assert model.head.out_features == model.meta_head.out_features == 7
    assert model([x, torch.zeros(2, 4), torch.zeros(2, 3)]).shape == (2, 7)


def test_plain_checkpoint_loads_with_fresh_meta_heads():
    plain = InternImage(**TINY)
    model = InternImageMetaFormer(**TINY)
    report = load_pretrained_meta(model, plain.state_dict())
    fresh = meta_parameter_names(model)
    assert sorted(report.missing) == sorted(fresh) and not report.unexpected
    assert {k.split(".")[0] for k in fresh} == {"meta_head_1", "meta_head_2", "meta_norm", "meta_head"}
    with pytest.raises(RuntimeError, match="meta_head"):  # the strict loader names them
        load_pretrained(InternImageMetaFormer(**TINY), plain.state_dict(), strict=True)
    # a meta-former checkpoint loads completely
    assert load_pretrained_meta(InternImageMetaFormer(**TINY), model.state_dict()).missing == []


# ----------------------------------------------------------------------------- data + trainer
# per class: a region and a season, so the metadata is informative (as in iNat)
PLACES = {0: (48.0, 2.0, "2017-06-{:02d}"), 1: (28.5, -80.6, "2017-12-{:02d}"),
          2: (-30.0, 150.0, "2018-03-{:02d}")}


def make_inat_meta_dataset(root, n_train: int = 8, n_val: int = 4) -> str:
    """train2018.json / val2018.json with latitude, longitude and date in the images entries;
    every 4th image has no metadata (absent keys or None values)."""
    root = str(root)
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        images, annotations = [], []
        for i, (label, im) in enumerate(photo_crops(n, seed)):
            path = os.path.join("train_val2018", split, CLASSES[label], f"{i:03d}.jpg")
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            im.save(os.path.join(root, path))
            entry = {"id": 500 + i, "file_name": path, "width": 40, "height": 40}
            lat, lon, date = PLACES[label]
            if i % 4 == 1:
                entry.update(latitude=None, longitude=None, date=None)
            elif i % 4 != 3:  # i % 4 == 3: the keys are absent
                when = date.format(1 + i % 28) + " 10:00:00"
                entry.update(latitude=lat + i % 3, longitude=lon - i % 2, date=when)
            images.append(entry)
            annotations.append({"id": i, "image_id": 500 + i, "category_id": label})
        with open(os.path.join(root, f"{split}2018.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": []}, f)
    return root


@pytest.fixture(scope="module")
def inat_meta_data(tmp_path_factory):
    return make_inat_meta_dataset(tmp_path_factory.mktemp("inat_meta"))


def test_inat_json_meta_rows_follow_the_samples(inat_meta_data, tmp_path):
    source = os.path.join(inat_meta_data, "train2018.json")
    samples, (temporal, spatial) = read_inat_json(source), read_inat_meta(source)
    assert temporal.shape == (len(samples), 4) == (24, 4) and spatial.shape == (24, 3)
    with open(source) as f:
        images = sorted(json.load(f)["images"], key=lambda e: e["id"])
    for t, s, entry in zip(temporal, spatial, images, strict=True):
        assert torch.equal(t, encode_temporal(entry.get("date")))
        assert torch.equal(s, encode_spatial(entry.get("latitude"), entry.get("longitude")))
        assert bool(s.any()) == (entry.get("latitude") is not None)
    # a separate locations file (the released iNat18 train2018_locations.json layout) fills gaps
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                 "annotations": [{"image_id": 1, "category_id": 0}]}))
    assert read_inat_meta(str(plain)) is None  # no metadata at all: plain (image, target) items
    locations = [{"id": 1, "lat": 10.0, "lon": 20.0, "date": "2017-01-02"}]
    (tmp_path / "loc.json").write_text(json.dumps(locations))
    t, s = read_inat_meta(str(plain), str(tmp_path / "loc.json"))
    assert torch.equal(t[0], encode_temporal("2017-01-02")) and torch.equal(s[0], encode_spatial(10.0, 20.0))


def _config(data: str, **extra):
    from classification.config import get_default_config

    config = get_default_config()
    config.merge_from_list([
        "DATA.DATASET", "inat18", "DATA.DATA_PATH", data, "DATA.IMG_SIZE", 32, "DATA.BATCH_SIZE", 8,
        "DATA.NUM_WORKERS", 0, "MODEL.NUM_CLASSES", 3, *sum(([k, v] for k, v in extra.items()), [])])
    return config


def test_loader_yields_img_temporal_spatial_and_mixup_mixes_only_images(inat_meta_data):
    config = _config(inat_meta_data, **{"AUG.MIXUP": 0.8, "AUG.CUTMIX": 1.0})
    dataset_train, dataset_val, loader_train, loader_val, mixup = build_loader(config, rank=0, world_size=1)
    item, target = dataset_train[0]
    assert isinstance(item, list) and len(item) == 3 and isinstance(target, int)
    samples, targets = next(iter(loader_train))
    images, temporal, spatial = samples
    assert images.shape == (8, 3, 32, 32) and temporal.shape == (8, 4) and spatial.shape == (8, 3)
    assert targets.shape == (8,)
    batch = ([images.clone(), temporal, spatial], targets)  # mixup works in place
    moved_images, soft, meta = trainer.prepare_batch(batch, torch.device("cpu"), mixup)
    assert soft.shape == (8, 3) and not torch.equal(moved_images, images)
    assert torch.equal(meta[0], temporal) and torch.equal(meta[1], spatial)  # per image, unmixed
    assert len(dataset_val) == 12


TRAIN_OPTS = [
    "MODEL.TYPE", "intern_image_meta_former", "DATA.DATASET", "inat18", "DATA.IMG_SIZE", "32",
    "DATA.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "0", "MODEL.NUM_CLASSES", "3", "MODEL.DROP_PATH_RATE", "0.0",
    "MODEL.INTERN_IMAGE.CHANNELS", "16", "MODEL.INTERN_IMAGE.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.INTERN_IMAGE.GROUPS", "[1, 2, 4, 8]", "MODEL.INTERN_IMAGE.CORE_OP", "DCNv3_pytorch",
    "MODEL.INTERN_IMAGE.USE_CLIP_PROJECTOR", "True",
    "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BASE_LR", "0.2", "TRAIN.MIN_LR", "0.002",
    "AUG.MIXUP", "0.8", "AUG.CUTMIX", "1.0", "AUG.REPROB", "0.0", "AUG.AUTO_AUGMENT", "none",
    "TRAIN.EMA.ENABLE", "True", "PRINT_FREQ", "1",
]


def test_trainer_trains_and_evaluates_the_meta_former(inat_meta_data, tmp_path, monkeypatch):
    calls = []
    forward = InternImageMetaFormer.forward

    def spy(self, x):
        calls.append(isinstance(x, list) and len(x) == 3 and x[1].shape == (x[0].shape[0], 4)
                     and x[2].shape == (x[0].shape[0], 3))
        return forward(self, x)

    monkeypatch.setattr(InternImageMetaFormer, "forward", spy)
    out = str(tmp_path / "out")
    result = trainer.main(["--data-path", inat_meta_data, "--output", out, "--epochs", "2", "--tag", "m",
                           "--opts", *TRAIN_OPTS])
    assert result["epochs_run"] == 2 and np.isfinite(result["train_loss"]) and result["acc1"] is not None
    assert calls and all(calls)  # every training and validation forward got [img, temporal, spatial]
    history = epoch_history(os.path.join(result["output"], "metrics.jsonl"))
    assert [r["epoch"] for r in history] == [0, 1] and all(r["ema_acc1"] is not None for r in history)
    best = os.path.join(result["output"], "ckpt_epoch_best.pth")
    state = load_checkpoint_file(best)["model"]  # our own file: no opt-in needed
    assert "meta_head_1.3.w1.weight" in state and "meta_head.weight" in state

    calls.clear()
    evaluated = trainer.main(["--data-path", inat_meta_data, "--output", out, "--tag", "eval", "--eval",
                              "--resume", best, "--opts", *TRAIN_OPTS])
    max_accuracy = load_checkpoint_file(best)["max_accuracy"]
    assert evaluated["acc1"] == pytest.approx(max_accuracy)
    assert calls and all(calls)
    calls.clear()
    tp = trainer.main(["--data-path", inat_meta_data, "--output", out, "--tag", "tp", "--throughput",
                       "--opts", *TRAIN_OPTS])
    assert tp["throughput"] > 0 and calls and all(calls)


def test_plain_checkpoint_finetunes_into_the_meta_former(inat_meta_data, tmp_path):
    """A plain InternImage checkpoint is a valid --pretrained for the meta-former (as the
    published recipe starts from internimage_h_jointto22k_384.pth), and the plain model trains
    on the same json (metadata ignored)."""
    plain_opts = [o if o != "intern_image_meta_former" else "intern_image" for o in TRAIN_OPTS]
    plain = trainer.main(["--data-path", inat_meta_data, "--output", str(tmp_path / "plain"), "--epochs", "1",
                          "--opts", *plain_opts])
    assert plain["epochs_run"] == 1
    ckpt = os.path.join(plain["output"], "ckpt_epoch_0.pth")
    tuned = trainer.main(["--data-path", inat_meta_data, "--output", str(tmp_path / "ft"), "--epochs", "1",
                          "--pretrained", ckpt, "--opts", *TRAIN_OPTS])
    assert tuned["epochs_run"] == 1
    with open(os.path.join(tuned["output"], "log_rank0.txt")) as f:
        log = f.read()
    assert "freshly initialised" in log and "meta_head_1.0.weight" in log
