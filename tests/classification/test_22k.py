"""ImageNet-22K as published: the 22K->1K map shipped in the package and applied with no
flag, EVAL_22K_TO_1K, the fall11_whole folder/list layout, and REMOVE_CENTER slicing of
dcn.offset / dcn.mask when loading weights trained with the centre point."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from photo_crops import photo_crops

from classification import main as trainer
from classification.config import load_config_file
from classification.data import MAP22KTO1K_FILE, build_dataset, map22kto1k_index, resolve_num_classes
from classification.models import InternImage
from classification.models.checkpoint import drop_dcn_centre, load_pretrained
from classification.utils import resume_training

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TINY = dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), drop_path_rate=0.0,
            core_op="DCNv3_pytorch")
TINY_YAML = """\
DATA:
  IMG_SIZE: 32
  BATCH_SIZE: 4
  NUM_WORKERS: 0
MODEL:
  DROP_PATH_RATE: 0.0
  INTERN_IMAGE:
    CHANNELS: 16
    DEPTHS: [1, 1, 1, 1]
    GROUPS: [1, 2, 4, 8]
    CORE_OP: DCNv3_pytorch
AUG:
  MIXUP: 0.0
  CUTMIX: 0.0
"""


# ----------------------------------------------------------------------------- the map
def test_the_map_ships_in_the_package():
    assert MAP22KTO1K_FILE.read_text() == (SHARED / "map22kto1k.txt").read_text()
    assert MAP22KTO1K_FILE.parent == ROOT / "classification" / "data"
    setup = (ROOT / "setup.py").read_text()
    assert '"data/map22kto1k.txt"' in setup  # package_data: pip installs carry it
    index = map22kto1k_index()
    assert index.shape == (1000,) and index[:3].tolist() == [359, 368, 460]
    assert len(set(index.tolist())) == 999  # as published: two 1K classes share one 22K row


def test_22k_checkpoint_meets_1k_model_with_no_flag(tmp_path):
    source = InternImage(num_classes=21841, **TINY)
    with torch.no_grad():  # row r of the 22K head holds r: the selected rows are readable
        rows = torch.arange(21841, dtype=torch.float32)
        source.head.weight.copy_(rows[:, None].expand_as(source.head.weight))
        source.head.bias.copy_(rows)
    path = tmp_path / "internimage_22k.pth"
    torch.save({"model": source.state_dict()}, path)
    target = InternImage(num_classes=1000, **TINY)
    report = load_pretrained(target, path)  # no map argument: the shipped table
    assert report.head == "mapped 21841->1000" and report.ok
    expected = map22kto1k_index().float()
    assert torch.equal(target.head.bias, expected)
    assert torch.equal(target.head.weight[:, 3], expected)


# ----------------------------------------------------------------------------- EVAL_22K_TO_1K
def _write_images(folder: Path, counts: dict[str, int]) -> None:
    crops = photo_crops(max(counts.values()), seed=3, size=32)
    for name, n in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            crops[k][1].save(folder / name / f"{k}.JPEG")


def test_eval_22k_to_1k_takes_the_1000_mapped_logits(tmp_path):
    # ImageNet-1K val with 4 / 2 / 3 images of classes 0 / 1 / 2
    data = tmp_path / "imagenet"
    _write_images(data / "val", {"n01440764": 4, "n01443537": 2, "n01484850": 3})
    index = map22kto1k_index()
    unmapped = sorted(set(range(1000, 21841)) - set(index.tolist()))  # beyond the first 1000 rows
    model = InternImage(num_classes=21841, **TINY)
    with torch.no_grad():  # the logits are the bias alone
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[unmapped[0]] = 100.0  # the 22K argmax, outside ImageNet-1K
        model.head.bias[index[0]] = 50.0  # the best of the 1000 mapped rows: 1K class 0
        assert 2 not in index.tolist()
        model.head.bias[2] = 80.0  # rows 0..999 taken as they are would say class 2
    ckpt = tmp_path / "22k.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    common = ["--cfg", str(cfg), "--data-path", str(data), "--output", str(tmp_path / "out"), "--eval",
              "--resume", str(ckpt), "--amp-opt-level", "O0"]
    result = trainer.main([*common, "--opts", "EVAL_22K_TO_1K", "True"])
    assert result["acc1"] == pytest.approx(100 * 4 / 9)
    with pytest.raises(RuntimeError, match="size mismatch|shape"):  # without it: a 1000-class model
        trainer.main(common)


def test_eval_22k_to_1k_is_for_evaluation(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    with pytest.raises(ValueError, match="EVAL_22K_TO_1K .* --eval"):
        trainer.main(["--cfg", str(cfg), "--data-path", str(tmp_path), "--output", str(tmp_path / "o"),
                      "--opts", "EVAL_22K_TO_1K", "True"])


# ----------------------------------------------------------------------------- fall11_whole layout
WNIDS = ("n00004475", "n00005787", "n00006024")  # classes 0, 1, 2 of 22k_class_to_idx.json


@pytest.fixture
def in22k(tmp_path) -> Path:
    root = tmp_path / "imagenet22k"
    _write_images(root / "fall11_whole", {w: 3 for w in WNIDS})
    shutil.copy(SHARED / "22k_class_to_idx.json", root / "22k_class_to_idx.json")
    mapping = json.loads((root / "22k_class_to_idx.json").read_text())
    assert [mapping[w] for w in WNIDS] == [0, 1, 2]
    # train: "<wnid>/<file>\t<index>"; val: the wnid as the label, path with fall11_whole/
    (root / "ILSVRC2011fall_whole_map_train.txt").write_text(
        "".join(f"{w}/{k}.JPEG\t{mapping[w]}\n" for w in WNIDS for k in range(2)))
    (root / "ILSVRC2011fall_whole_map_val.txt").write_text(
        "".join(f"fall11_whole/{w}/2.JPEG {w}\n" for w in WNIDS[::-1]))
    return root


def _22k_config(root: Path):
    cfg = root.parent / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    return load_config_file(str(cfg), ["DATA.DATASET", "imagenet22K", "DATA.DATA_PATH", str(root)])


def test_published_22k_layout(in22k):
    config = _22k_config(in22k)
    assert resolve_num_classes(config) == 21841 == config.MODEL.NUM_CLASSES  # as the published loader
    train, val = build_dataset(True, config), build_dataset(False, config)
    assert [label for _, label in train.samples] == [0, 0, 1, 1, 2, 2]
    assert train.samples[0][0] == "n00004475/0.JPEG"
    assert [label for _, label in val.samples] == [2, 1, 0]
    assert len(train.classes) == 21841 and train.classes[:3] == list(WNIDS)
    image, label = val[0]
    assert image.shape == (3, 32, 32) and label == 2


def test_22k_list_disagreeing_with_the_json_is_an_error(in22k):
    (in22k / "ILSVRC2011fall_whole_map_train.txt").write_text(f"{WNIDS[0]}/0.JPEG 5\n")
    with pytest.raises(ValueError, match="label 5 .* index 0"):
        build_dataset(True, _22k_config(in22k))
    os.remove(in22k / "ILSVRC2011fall_whole_map_val.txt")
    with pytest.raises(FileNotFoundError, match="ILSVRC2011fall_whole_map_val.txt"):
        build_dataset(False, _22k_config(in22k))


# ----------------------------------------------------------------------------- REMOVE_CENTER
def _with_centre(seed: int = 0) -> InternImage:
    """A model trained with the centre point, whose centre points get no weight: their mask
    logits are -1e4, so softmax gives them 0 and the other 8 points the same weights as a
    remove-center model's softmax over 8."""
    torch.manual_seed(seed)
    model = InternImage(num_classes=4, **TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.2)  # non-zero offsets: every point samples elsewhere
            if name.endswith("dcn.mask.bias"):
                p.view(-1, 9)[:, 4] = -1e4  # (group, point) layout, centre = point 4
            if name.endswith("dcn.mask.weight"):
                p.view(-1, 9, p.shape[-1])[:, 4] = 0.0
    return model


def test_remove_center_slices_offsets_and_masks_on_pretrained():
    source = _with_centre()
    target = InternImage(num_classes=4, remove_center=True, **TINY).eval()
    report = load_pretrained(target, source.state_dict())
    assert report.ok and any("centre point" in note for note in report.notes)
    src, dst = source.state_dict(), target.state_dict()
    key = "levels.2.blocks.0.dcn.offset.weight"  # 4 groups: (4*9*2, C) -> (4*8*2, C)
    assert src[key].shape[0] == 72 and dst[key].shape[0] == 64
    keep = [p for p in range(9) if p != 4]
    torch.testing.assert_close(dst[key].view(4, 8, 2, -1), src[key].view(4, 9, 2, -1)[:, keep])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the remaining points kept their meaning: the same function
        torch.testing.assert_close(target(x), source(x), rtol=1e-4, atol=1e-5)


def test_remove_center_on_resume():
    source = _with_centre(seed=1)
    optimizer = torch.optim.AdamW(source.parameters())
    source(torch.randn(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    checkpoint = {"model": source.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                  "ema": source.state_dict()}
    target = InternImage(num_classes=4, remove_center=True, **TINY).eval()
    fresh = torch.optim.AdamW(target.parameters())
    info = resume_training(checkpoint, model=target, optimizer=fresh)
    assert info["epoch"] == 3 and not fresh.state  # moments of the old shapes are not loaded
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source.eval()(x), rtol=1e-4, atol=1e-5)


def test_drop_dcn_centre_leaves_matching_tensors_alone():
    model = InternImage(num_classes=4, **TINY)
    state = model.state_dict()
    out, sliced = drop_dcn_centre(state, state)
    assert not sliced and all(out[k] is state[k] for k in state)
