"""extract_feature.py on a real photo with a small config: printed shapes, saved features,
loaded weights, bad keys; run as a script and as a module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

from classification.config import load_config_file
from classification.extract_feature import load_image, main
from classification.models import build_model

ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = """\
MODEL:
  NAME: tiny
  NUM_CLASSES: 10
  DROP_PATH_RATE: 0.0
  INTERN_IMAGE:
    CHANNELS: 16
    DEPTHS: [1, 1, 1, 1]
    GROUPS: [1, 2, 4, 8]
    CORE_OP: DCNv3_pytorch
DATA:
  IMG_SIZE: 96
"""
KEYS = ["patch_embed", "levels.0.downsample", "levels.2.blocks.0.dcn", "levels.3", "conv_head", "head"]
SHAPES = {"patch_embed": "(1, 24, 24, 16)", "levels.0.downsample": "(1, 12, 12, 32)",
          "levels.2.blocks.0.dcn": "(1, 6, 6, 64)", "levels.3": "(1, 3, 3, 128)",
          "conv_head": "(1, 192, 3, 3)", "head": "(1, 10)"}


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(SMALL_CONFIG)
    img = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(img)
    return cfg, img


def test_script_prints_and_saves(setup, tmp_path):
    cfg, img = setup
    out = tmp_path / "feats"
    result = subprocess.run(
        [sys.executable, "classification/extract_feature.py", "--cfg", str(cfg), "--img", str(img),
         "--keys", *KEYS, "--save", "--output", str(out), "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for key in KEYS:
        assert f"{key}: {SHAPES[key]}" in lines
    saved = torch.load(out / "astronaut_features.pth", weights_only=True)
    assert list(saved) == KEYS
    assert {k: str(tuple(v.shape)) for k, v in saved.items()} == SHAPES
    assert f"saved {len(KEYS)} features to {out / 'astronaut_features.pth'}" in lines


def test_in_process_run_with_weights(setup, tmp_path, capsys):
    cfg, img = setup
    config = load_config_file(str(cfg))
    torch.manual_seed(3)
    model = build_model(config).eval()
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, ckpt)

    features = main(["--cfg", str(cfg), "--img", str(img), "--keys", "head", "levels.1",
                     "--resume", str(ckpt), "--device", "cpu"])
    x = load_image(img, 96, "bicubic")
    assert x.shape == (1, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(features["head"], expected)
    assert features["levels.1"].shape == (1, 6, 6, 64)  # 96 / 4 / 2 / 2: after its downsample
    assert "head: (1, 10)" in capsys.readouterr().out
    assert not (tmp_path / "output").exists()  # nothing saved without --save


def test_image_is_normalised(setup):
    _, img = setup
    x = load_image(img, 32)
    reference = torch.tensor(data.astronaut()[..., 0], dtype=torch.float32).mean() / 255
    # mean of the red channel survives the resize; normalisation is (v - 0.485) / 0.229
    assert (x[0, 0].mean() * 0.229 + 0.485).item() == pytest.approx(reference.item(), abs=0.02)


def test_bad_key_lists_valid_names(setup):
    cfg, img = setup
    with pytest.raises(KeyError) as info:
        main(["--cfg", str(cfg), "--img", str(img), "--keys", "levels.9.blocks", "--device", "cpu"])
    message = str(info.value)
    assert "'levels.9.blocks'" in message
    assert "valid top-level names: patch_embed, pos_drop, levels, conv_head, head, avgpool" in message


def test_missing_image(setup, tmp_path):
    cfg, _ = setup
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        main(["--cfg", str(cfg), "--img", str(tmp_path / "nope.jpg"), "--keys", "head", "--device", "cpu"])


def test_runs_as_module_help():
    result = subprocess.run([sys.executable, "-m", "classification.extract_feature", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--keys" in result.stdout and "--resume" in result.stdout
