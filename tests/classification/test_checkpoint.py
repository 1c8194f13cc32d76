"""Pretrained-weight loading: checkpoint wrappings, prefixes, strict reports, classifier
head adaptation (re-initialisation, 21841 -> 1000 class map) and error messages."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch

from classification.models import InternImage
from classification.models.checkpoint import (
    LoadReport,
    load_pretrained,
    read_class_map,
    read_state_dict,
    strip_prefix,
    unwrap_state_dict,
)

ROOT = Path(__file__).resolve().parents[2]
MAP_22K_TO_1K = ROOT.parent / "shared" / "data" / "map22kto1k.txt"
SMALL = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), layer_scale=1e-5, post_norm=True,
             drop_path_rate=0.0, core_op="DCNv3_pytorch")


def _model(num_classes: int = 5, seed: int = 0) -> InternImage:
    torch.manual_seed(seed)
    model = InternImage(num_classes=num_classes, **SMALL)
    with torch.no_grad():  # distinct values everywhere, so a missed tensor cannot pass unnoticed
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _assert_same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.startswith(skip):
            assert torch.equal(sa[key], sb[key]), key


WRAPPINGS = {
    "model": lambda sd: {"model": sd, "epoch": 3},
    "module": lambda sd: {"module": sd},
    "state_dict+backbone": lambda sd: {"state_dict": {f"backbone.{k}": v for k, v in sd.items()},
                                       "meta": {"epoch": 12}},
    "bare": lambda sd: dict(sd),
    "module. prefix": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "nested": lambda sd: {"state_dict": {"module": dict(sd)}},
}


@pytest.mark.parametrize("wrap", list(WRAPPINGS))
def test_round_trip(tmp_path, wrap):
    source = _model(seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save(WRAPPINGS[wrap](source.state_dict()), path)

    flat = read_state_dict(path)
    if wrap == "state_dict+backbone":
        assert all(k.startswith("backbone.") for k in flat)
        flat = strip_prefix(flat, "backbone.")
    assert flat.keys() == source.state_dict().keys()

    target = _model(seed=2)
    report = load_pretrained(target, path, strict=True)
    assert report.ok and report.head == "loaded"
    assert len(report.loaded) == len(source.state_dict())
    _assert_same(source, target)
    x = torch.randn(1, 3, 32, 32)
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_load_from_mapping_and_module():
    source = _model(seed=1)
    target = _model(seed=2)
    load_pretrained(target, {"model": source.state_dict()})
    _assert_same(source, target)
    assert unwrap_state_dict(source).keys() == source.state_dict().keys()


def test_strip_prefix():
    sd = {"backbone.a": torch.zeros(1), "backbone.b.c": torch.ones(1), "decode_head.w": torch.zeros(2)}
    assert list(strip_prefix(sd, "backbone.")) == ["a", "b.c"]
    assert list(strip_prefix(sd, "backbone.", drop_others=False)) == ["a", "b.c", "decode_head.w"]
    plain = {"patch_embed.conv1.weight": torch.zeros(1)}
    assert strip_prefix(plain, "backbone.") == plain  # classification checkpoints pass unchanged


def test_url_goes_through_torch_hub(monkeypatch, tmp_path):
    source = _model(seed=1)
    seen = []

    def fake_download(url, dst, *args, **kwargs):
        seen.append(url)
        torch.save({"model": source.state_dict()}, dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    for _ in range(2):  # downloaded once into the torch.hub cache, then read from there
        flat = read_state_dict("https://example.org/internimage_t_1k_224.pth")
    assert seen == ["https://example.org/internimage_t_1k_224.pth"]
    assert (tmp_path / "checkpoints" / "internimage_t_1k_224.pth").is_file()
    assert flat.keys() == source.state_dict().keys()


def test_strict_failure_report(tmp_path):
    sd = _model().state_dict()
    del sd["levels.0.blocks.0.mlp.fc1.weight"]
    sd["levels.9.extra.weight"] = torch.zeros(3)
    sd["levels.1.blocks.0.gamma1"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    target = _model(seed=3)
    before = target.state_dict()["levels.1.blocks.0.gamma1"].clone()
    with pytest.raises(RuntimeError) as info:
        load_pretrained(target, path, strict=True)
    message = str(info.value)
    assert "missing keys (in the model, not in the checkpoint) (1):" in message
    assert "levels.0.blocks.0.mlp.fc1.weight" in message
    assert "unexpected keys (in the checkpoint, not in the model) (1):" in message
    assert "levels.9.extra.weight" in message
    assert "levels.1.blocks.0.gamma1: (7,) vs (32,)" in message
    assert str(path) in message

    report = load_pretrained(target, path, strict=False)
    assert isinstance(report, LoadReport) and not report.ok
    assert report.missing == ["levels.0.blocks.0.mlp.fc1.weight"]
    assert report.unexpected == ["levels.9.extra.weight"]
    assert report.mismatched == [("levels.1.blocks.0.gamma1", (7,), (32,))]
    assert torch.equal(target.state_dict()["levels.1.blocks.0.gamma1"], before)  # left alone
    assert torch.equal(target.state_dict()["patch_embed.conv1.weight"], sd["patch_embed.conv1.weight"])


def test_long_report_is_truncated():
    sd = {k: v for k, v in _model().state_dict().items() if not k.startswith("levels.2")}
    with pytest.raises(RuntimeError) as info:
        load_pretrained(_model(), sd)
    missing = [k for k in _model().state_dict() if k.startswith("levels.2")]
    assert len(missing) > 25
    message = str(info.value)
    assert f"missing keys (in the model, not in the checkpoint) ({len(missing)}):" in message
    assert f"... and {len(missing) - 20} more" in message
    assert message.count("\n    levels.2.") == 20


def test_head_reinitialised_on_class_mismatch(tmp_path, caplog):
    source = _model(num_classes=5, seed=1)
    path = tmp_path / "five.pth"
    torch.save({"model": source.state_dict()}, path)
    target = _model(num_classes=7, seed=2)
    with torch.no_grad():
        target.head.weight.fill_(3.0)
        target.head.bias.fill_(3.0)
    with pytest.warns(UserWarning, match="re-initialising the classifier head: checkpoint head has 5"), \
            caplog.at_level(logging.WARNING):
        report = load_pretrained(target, path, strict=True)
    assert "re-initialising the classifier head" in caplog.text
    assert report.head == "reinitialised" and report.ok
    assert torch.count_nonzero(target.head.bias) == 0
    assert 0.005 < target.head.weight.std().item() < 0.04  # trunc-normal std .02, not the 3s
    _assert_same(source, target, skip=("head.",))


def test_reinit_head_on_request():
    source = _model(seed=1)
    target = _model(seed=2)
    report = load_pretrained(target, source.state_dict(), reinit_head=True)
    assert report.head == "reinitialised"
    assert not torch.equal(target.head.weight, source.head.weight)
    assert torch.count_nonzero(target.head.bias) == 0
    _assert_same(source, target, skip=("head.",))


def test_headless_model_drops_the_checkpoint_head():
    source = _model(seed=1)
    target = InternImage(num_classes=0, **SMALL)
    report = load_pretrained(target, source.state_dict(), strict=True)
    assert report.head == "dropped" and report.ok


@pytest.fixture
def map_file() -> Path:
    # ../shared sits beside the repository on every machine, CI included.
    assert MAP_22K_TO_1K.is_file(), f"{MAP_22K_TO_1K} not found: ../shared/data must sit beside the repo"
    return MAP_22K_TO_1K


def test_22k_head_mapped_to_1k(map_file, tmp_path):
    source = InternImage(num_classes=21841, **SMALL)
    with torch.no_grad():  # row r of the 22K head holds r everywhere: the mapping is readable
        rows = torch.arange(21841, dtype=torch.float32)
        source.head.weight.copy_(rows[:, None].expand_as(source.head.weight))
        source.head.bias.copy_(rows + 0.5)
    path = tmp_path / "22k.pth"
    torch.save({"model": source.state_dict()}, path)

    target = InternImage(num_classes=1000, **SMALL)
    report = load_pretrained(target, path, map22kto1k_path=map_file)
    assert report.head == "mapped 21841->1000" and report.ok
    index = [int(line) for line in map_file.read_text().split()]
    assert len(index) == 1000 and index[:3] == [359, 368, 460]
    expected = torch.tensor(index, dtype=torch.float32)
    assert torch.equal(target.head.weight[:, 0], expected)
    assert torch.equal(target.head.weight, expected[:, None].expand_as(target.head.weight))
    assert torch.equal(target.head.bias, expected + 0.5)
    _assert_same(source, target, skip=("head.",))
    assert torch.equal(read_class_map(map_file), torch.tensor(index))


def test_22k_head_without_map_uses_the_shipped_one(map_file):
    source = InternImage(num_classes=21841, **SMALL)
    target = InternImage(num_classes=1000, **SMALL)
    report = load_pretrained(target, source.state_dict())  # no flag: the table in the package
    assert report.head == "mapped 21841->1000"
    assert torch.equal(target.head.bias, source.head.bias[read_class_map(map_file)])


def test_bad_class_map(tmp_path):
    bad = tmp_path / "map.txt"
    bad.write_text("1\n2\n")
    with pytest.raises(ValueError, match="expected 1000 lines, found 2"):
        read_class_map(bad)
    bad.write_text("30000\n" * 1000)
    with pytest.raises(ValueError, match="indices must lie in"):
        read_class_map(bad)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "internimage_t_1k_224.pth"
    with pytest.raises(FileNotFoundError, match="internimage_t_1k_224.pth' does not exist"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_pretrained(_model(), path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_text("this is not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth is not a readable PyTorch checkpoint"):
        read_state_dict(path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(RuntimeError, match="not a readable PyTorch checkpoint"):
        read_state_dict(empty)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "train_state.pth"
    torch.save({"epoch": 3, "max_accuracy": 81.0}, path)
    with pytest.raises(ValueError, match=r"not a state_dict.*'epoch', 'max_accuracy'"):
        read_state_dict(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="not a state_dict: found an object of type torch.Tensor"):
        read_state_dict(path)


def test_allowlisted_extras_load_without_a_full_unpickle(tmp_path):
    # argparse namespaces are allowlisted; anything else is refused (tests/security)
    source = _model(seed=1)
    path = tmp_path / "old.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    flat = read_state_dict(path)
    assert flat.keys() == source.state_dict().keys()
