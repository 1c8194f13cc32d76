"""The meta-former variant (MODEL.TYPE intern_image_meta): metadata encoding, InternImageMeta
against InternImage, the iNat18 config, the iNat18 json dataset with location/date, and the
trainer end to end on a tiny iNat18-format dataset of real photo crops."""

from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np
import pytest
import torch
from photo_crops import CLASSES, photo_crops

from classification import main as trainer
from classification.config import get_default_config, load_config_file
from classification.data import build_loader
from classification.data.datasets import read_inat_json, read_inat_meta
from classification.models import (
    InternImage,
    InternImageMeta,
    build_model,
    encode_meta,
    load_pretrained,
    load_pretrained_meta,
)
from classification.models.intern_image_meta import day_of_year, meta_parameter_names
from classification.utils import epoch_history

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch", num_classes=5,
            drop_path_rate=0.0)


# ----------------------------------------------------------------------------- encode_meta
def test_encode_meta_values_and_ranges():
    v = encode_meta(45.0, 90.0, "2018-01-01 10:00:00+00:00")
    assert v.shape == (7,) and v.dtype == torch.float32
    a = math.pi / 4  # 45 / 90 * pi / 2
    expected = [math.sin(a), math.cos(a), 1.0, 0.0, 0.0, 1.0, 1.0]  # lon 90 -> pi/2; Jan 1 -> angle 0
    torch.testing.assert_close(v, torch.tensor(expected), atol=1e-6, rtol=0)
    # poles, date line, last day of a leap year
    north = encode_meta(90, 180, "2016-12-31")
    assert north[0] == pytest.approx(1.0) and abs(north[1]) < 1e-6
    assert north[3] == pytest.approx(-1.0) and abs(north[2]) < 1e-6
    assert north[5] == pytest.approx(math.cos(2 * math.pi * 365 / 366))
    torch.testing.assert_close(encode_meta(-30.5, -179.0, None)[:4], encode_meta(-30.5, 181.0, None)[:4])
    rng = np.random.default_rng(0)
    for _ in range(50):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        day = datetime.date(2017, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 365)))
        v = encode_meta(lat, lon, day.isoformat())
        assert torch.all(v.abs() <= 1.0 + 1e-6) and v[6] == 1.0
        for i in (0, 2, 4):  # each (sin, cos) pair lies on the unit circle
            assert float(v[i] ** 2 + v[i + 1] ** 2) == pytest.approx(1.0, abs=1e-5)
        assert float(v[1]) >= -1e-6  # cos(latitude) >= 0: latitude maps into [-pi/2, pi/2]


def test_encode_meta_missing_and_partial():
    assert torch.equal(encode_meta(None, None, None), torch.zeros(7))
    for bad in ((None, 10.0, ""), (10.0, None, "not a date"), (95.0, 0.0, None), (float("nan"), 1.0, None),
                ("abc", 1.0, "2017-02-30")):
        assert torch.equal(encode_meta(*bad), torch.zeros(7)), bad
    only_date = encode_meta(None, None, "2017-07-02")
    assert torch.equal(only_date[:4], torch.zeros(4)) and only_date[6] == 1.0
    assert float(only_date[4] ** 2 + only_date[5] ** 2) == pytest.approx(1.0)
    only_place = encode_meta("12.5", -3, None)  # numeric strings are accepted
    assert torch.equal(only_place[4:6], torch.zeros(2)) and only_place[6] == 1.0
    assert day_of_year(datetime.datetime(2017, 3, 1, 12)) == (60, 365)
    assert day_of_year("2016/03/01") == (61, 366)


# ----------------------------------------------------------------------------- the model
def _pair(use_clip_projector: bool):
    plain = InternImage(**TINY, use_clip_projector=use_clip_projector).eval()
    meta = InternImageMeta(**TINY, use_clip_projector=use_clip_projector).eval()
    report = load_pretrained_meta(meta, plain.state_dict())
    return plain, meta, report


@pytest.mark.parametrize("clip", [False, True], ids=["pooled-sum", "clip-token"])
def test_without_meta_equals_internimage(clip):
    plain, model, report = _pair(clip)
    fresh = meta_parameter_names(model)
    assert fresh and all(k.startswith("meta_embed.") for k in fresh)
    assert sorted(report.missing) == sorted(fresh) and not report.unexpected and not report.mismatched
    assert model.meta_dim == (1024 if clip else int(16 * 8 * 1.5))
    # the strict loader rejects the plain checkpoint only because of the meta_* tensors
    with pytest.raises(RuntimeError, match="meta_embed"):
        load_pretrained(InternImageMeta(**TINY, use_clip_projector=clip), plain.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        # rows whose valid flag is 0 (no metadata at all) get the image-only logits
        torch.testing.assert_close(model(x, torch.zeros(3, 7)), expected, rtol=1e-5, atol=1e-5)
        meta = torch.stack([encode_meta(40, -3, "2017-05-01"), encode_meta(None, None, None),
                            encode_meta(-20, 150, None)])
        with_meta = model(x, meta)
    assert with_meta.shape == expected.shape
    torch.testing.assert_close(with_meta[1], expected[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_meta[0], expected[0], atol=1e-4)
    assert not torch.allclose(with_meta[2], expected[2], atol=1e-4)
    # different places/dates give different logits for the same image
    with torch.no_grad():
        other = model(x, torch.stack([encode_meta(-40, 100, "2017-11-01")] * 3))
    assert not torch.allclose(other[0], with_meta[0], atol=1e-4)


@pytest.mark.parametrize("clip", [False, True], ids=["pooled-sum", "clip-token"])
def test_meta_gets_gradients_and_bad_shapes_are_rejected(clip):
    model = InternImageMeta(**TINY, use_clip_projector=clip, meta_hidden_dim=32)
    assert model.meta_embed[0].out_features == 32
    meta = torch.stack([encode_meta(10, 20, "2017-01-05"), encode_meta(-10, -20, None)])
    model(torch.randn(2, 3, 32, 32), meta).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.meta_embed.parameters())
    with pytest.raises(ValueError, match=r"meta must be \(N, 7\)"):
        model(torch.randn(2, 3, 32, 32), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="rows for a batch"):
        model(torch.randn(2, 3, 32, 32), torch.zeros(3, 7))
    # layer-wise lr decay: the new embedding trains at the full rate, like the head
    scales = model.layer_decay_scales(0.5)
    assert all(scales[k] == 1.0 for k in scales if k.startswith("meta_"))


def test_inat18_config_builds_the_meta_h_model():
    path = os.path.join(REPO, "classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml")
    config = load_config_file(path)
    assert config.MODEL.TYPE == "intern_image_meta" and config.MODEL.NUM_CLASSES == 8142
    assert config.DATA.DATASET == "inat18" and config.MODEL.META.DIM == 0
    with torch.device("meta"):
        model = build_model(config)
    assert isinstance(model, InternImageMeta) and model.use_clip_projector and model.meta_dim == 1024
    params = dict(model.named_parameters())
    meta_params = sum(p.numel() for k, p in params.items() if k.startswith("meta_"))
    d = 1024
    assert meta_params == (7 * d + d) + (d * d + d) + 2 * d  # Linear(7,D), Linear(D,D), LayerNorm(D)
    trunk = sum(p.numel() for k, p in params.items() if not k.startswith("meta_"))
    # model.md: H has 1089.64M parameters with a 1000-class head (768 inputs + bias per class)
    assert round((trunk - (8142 - 1000) * 769) / 1e6, 2) == 1089.64
    # MODEL.META.DIM sets the hidden width; plain intern_image is unchanged
    small = get_default_config()
    small.merge_from_list(["MODEL.TYPE", "intern_image_meta", "MODEL.META.DIM", "64",
                           "MODEL.INTERN_IMAGE.CORE_OP", "DCNv3_pytorch"])
    with torch.device("meta"):
        built = build_model(small)
    assert built.meta_embed[0].out_features == 64 and built.meta_dim == int(512 * 1.5)
    small.MODEL.TYPE = "intern_image"
    with torch.device("meta"):
        assert type(build_model(small)) is InternImage
    small.MODEL.TYPE = "nope"
    with pytest.raises(ValueError, match="intern_image_meta"):
        build_model(small)


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
    samples, meta = read_inat_json(source), read_inat_meta(source)
    assert meta.shape == (len(samples), 7) == (24, 7)
    with open(source) as f:
        images = sorted(json.load(f)["images"], key=lambda e: e["id"])
    for row, entry in zip(meta, images, strict=True):
        expected = encode_meta(entry.get("latitude"), entry.get("longitude"), entry.get("date"))
        assert torch.equal(row, expected)
        assert row[6] == (1.0 if entry.get("latitude") is not None else 0.0)
    # a json without any location/date gives no metadata (plain (image, target) items)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                 "annotations": [{"image_id": 1, "category_id": 0}]}))
    assert read_inat_meta(str(plain)) is None
    # a separate locations file (the released iNat18 train2018_locations.json layout) fills gaps
    locations = [{"id": 1, "lat": 10.0, "lon": 20.0, "date": "2017-01-02"}]
    (tmp_path / "loc.json").write_text(json.dumps(locations))
    torch.testing.assert_close(read_inat_meta(str(plain), str(tmp_path / "loc.json"))[0],
                               encode_meta(10.0, 20.0, "2017-01-02"))


def _config(data: str, **extra):
    config = get_default_config()
    config.merge_from_list([
        "DATA.DATASET", "inat18", "DATA.DATA_PATH", data, "DATA.IMG_SIZE", 32, "DATA.BATCH_SIZE", 8,
        "DATA.NUM_WORKERS", 0, "MODEL.NUM_CLASSES", 3, *sum(([k, v] for k, v in extra.items()), [])])
    return config


def test_loader_yields_meta_and_mixup_leaves_it_alone(inat_meta_data):
    config = _config(inat_meta_data, **{"AUG.MIXUP": 0.8, "AUG.CUTMIX": 1.0})
    dataset_train, dataset_val, loader_train, loader_val, mixup = build_loader(config, rank=0, world_size=1)
    images, targets, meta = next(iter(loader_train))
    assert images.shape == (8, 3, 32, 32) and targets.shape == (8,) and meta.shape == (8, 7)
    mixed, soft = mixup(images.clone(), targets)
    assert soft.shape == (8, 3) and not torch.equal(mixed, images)
    assert len(next(iter(loader_val))) == 3 and len(dataset_val) == 12


TRAIN_OPTS = [
    "MODEL.TYPE", "intern_image_meta", "DATA.DATASET", "inat18", "DATA.IMG_SIZE", "32",
    "DATA.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "0", "MODEL.NUM_CLASSES", "3", "MODEL.DROP_PATH_RATE", "0.0",
    "MODEL.INTERN_IMAGE.CHANNELS", "16", "MODEL.INTERN_IMAGE.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.INTERN_IMAGE.GROUPS", "[1, 2, 4, 8]", "MODEL.INTERN_IMAGE.CORE_OP", "DCNv3_pytorch",
    "MODEL.INTERN_IMAGE.USE_CLIP_PROJECTOR", "True", "MODEL.META.DIM", "64",
    "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BASE_LR", "0.2", "TRAIN.MIN_LR", "0.002",
    "AUG.MIXUP", "0.8", "AUG.CUTMIX", "1.0", "AUG.REPROB", "0.0", "AUG.AUTO_AUGMENT", "none",
    "TRAIN.EMA.ENABLE", "True", "PRINT_FREQ", "1",
]


def test_trainer_trains_and_evaluates_the_meta_model(inat_meta_data, tmp_path, monkeypatch):
    calls = []
    forward = InternImageMeta.forward

    def spy(self, x, meta=None):
        calls.append(meta is not None and meta.shape == (x.shape[0], 7))
        return forward(self, x, meta)

    monkeypatch.setattr(InternImageMeta, "forward", spy)
    out = str(tmp_path / "out")
    result = trainer.main(["--data-path", inat_meta_data, "--output", out, "--epochs", "2", "--tag", "m",
                           "--opts", *TRAIN_OPTS])
    assert result["epochs_run"] == 2 and np.isfinite(result["train_loss"]) and result["acc1"] is not None
    assert calls and all(calls)  # every training and validation forward got the metadata
    history = epoch_history(os.path.join(result["output"], "metrics.jsonl"))
    assert [r["epoch"] for r in history] == [0, 1] and all(r["ema_acc1"] is not None for r in history)
    best = os.path.join(result["output"], "ckpt_epoch_best.pth")
    state = torch.load(best, map_location="cpu")["model"]
    assert "meta_embed.0.weight" in state

    calls.clear()
    evaluated = trainer.main(["--data-path", inat_meta_data, "--output", out, "--tag", "eval", "--eval",
                              "--resume", best, "--opts", *TRAIN_OPTS])
    assert evaluated["acc1"] == pytest.approx(torch.load(best, map_location="cpu")["max_accuracy"])
    assert calls and all(calls)
    calls.clear()
    tp = trainer.main(["--data-path", inat_meta_data, "--output", out, "--tag", "tp", "--throughput",
                       "--opts", *TRAIN_OPTS])
    assert tp["throughput"] > 0 and calls and all(calls)


def test_plain_checkpoint_finetunes_into_the_meta_model(inat_meta_data, tmp_path):
    """A plain InternImage checkpoint is a valid --pretrained for intern_image_meta, and the
    plain model trains on the same json (metadata ignored)."""
    plain_opts = [o if o != "intern_image_meta" else "intern_image" for o in TRAIN_OPTS]
    out = str(tmp_path / "out")
    plain = trainer.main(["--data-path", inat_meta_data, "--output", out, "--epochs", "1", "--tag", "plain",
                          "--opts", *plain_opts])
    assert plain["epochs_run"] == 1
    ckpt = os.path.join(plain["output"], "ckpt_epoch_0.pth")
    tuned = trainer.main(["--data-path", inat_meta_data, "--output", out, "--epochs", "1", "--tag", "ft",
                          "--pretrained", ckpt, "--opts", *TRAIN_OPTS])
    assert tuned["epochs_run"] == 1
    with open(os.path.join(tuned["output"], "log_rank0.txt")) as f:
        log = f.read()
    assert "freshly initialised" in log and "meta_embed.0.weight" in log
