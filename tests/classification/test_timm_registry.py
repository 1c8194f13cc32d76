"""timm integration: the published names are registered with the right pretrained cfgs,
build the right models, load weights from a local file or the Hugging Face cache, and say
what to fetch when the weights are not available."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from timm.data import resolve_data_config

import classification.models  # noqa: F401  (registers the names)
from classification.models import InternImage
from classification.models.registry import PUBLISHED

ROOT = Path(__file__).resolve().parents[2]
NAMES = {
    "internimage_t_1k_224": (1000, 224, 29.92), "internimage_s_1k_224": (1000, 224, 50.08),
    "internimage_b_1k_224": (1000, 224, 97.46), "internimage_l_22kto1k_384": (1000, 384, 223.33),
    "internimage_xl_22kto1k_384": (1000, 384, 334.82), "internimage_h_22kto1k_640": (1000, 640, 1089.64),
    "internimage_g_22kto1k_512": (1000, 512, 3076.37),
    "internimage_l_22k_192to384": (21841, 384, None), "internimage_xl_22k_192to384": (21841, 384, None),
    "internimage_h_jointto22k_384": (21841, 384, None), "internimage_g_pretrainto22k_384": (21841, 384, None),
}
HEAD_IN = {"l": 1920, "xl": 2304, "h": 768, "g": 768}
PARAMS_1K = {"l": 223.33, "xl": 334.82, "h": 1089.64, "g": 3076.37}


def test_all_names_registered():
    assert set(PUBLISHED) == set(NAMES)
    assert set(NAMES) <= set(timm.list_models("internimage*"))
    assert set(NAMES) <= set(timm.list_models("internimage*", pretrained=True))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_pretrained_cfg(name):
    classes, size, _ = NAMES[name]
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert cfg["hf_hub_id"] == "OpenGVLab/InternImage"
    assert cfg["hf_hub_filename"] == f"{name}.pth"
    assert cfg["num_classes"] == classes
    assert cfg["input_size"] == (3, size, size)
    # the published eval (TEST.CROP): short side resized to the input size, centre crop
    assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center" and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["first_conv"] == "patch_embed.conv1" and cfg["classifier"] == "head"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_create_model_on_meta(name):
    classes, size, params_m = NAMES[name]
    model = timm.create_model(name, device="meta")
    assert isinstance(model, InternImage)
    assert model.head.out_features == classes and model.num_classes == classes
    assert next(model.parameters()).device.type == "meta"
    params = sum(p.numel() for p in model.parameters())
    variant = name.split("_")[1]
    if classes != 1000:  # compare with model.md's 1000-class count
        params -= (classes - 1000) * (HEAD_IN[variant] + 1)
    assert round(params / 1e6, 2) == (params_m or PARAMS_1K[variant])
    data = resolve_data_config(model=model)
    assert data["input_size"] == (3, size, size)


def test_kwargs_override_variant_defaults():
    model = timm.create_model("internimage_s_1k_224", device="meta", num_classes=10, drop_path_rate=0.3,
                              core_op="DCNv3_pytorch", with_cp=True)
    assert model.head.out_features == 10 and model.core_op == "DCNv3_pytorch" and model.with_cp
    assert model.levels[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    default = timm.create_model("internimage_s_1k_224", device="meta")
    assert default.levels[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.4)  # the S recipe
    assert default.levels[0].blocks[0].gamma1.shape == (80,)


@pytest.fixture(scope="module")
def saved_t(tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A T model with non-trivial weights saved as a published file ({'model': sd}), and its
    logits on a small input."""
    torch.manual_seed(0)
    model = timm.create_model("internimage_t_1k_224").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dcn.offset." in name or ".dcn.mask." in name:
                p.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("weights") / "internimage_t_1k_224.pth"
    torch.save({"model": model.state_dict()}, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    return path, x, logits


def test_pretrained_from_local_file(saved_t):
    path, x, logits = saved_t
    model = timm.create_model("internimage_t_1k_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    assert model.pretrained_cfg["file"] == str(path)


def test_pretrained_from_hf_cache_offline(saved_t, tmp_path, monkeypatch):
    """A file already in the Hugging Face cache loads without the network."""
    path, x, logits = saved_t
    repo = tmp_path / "models--OpenGVLab--InternImage"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(path, repo / "snapshots" / commit / path.name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model("internimage_t_1k_224", pretrained=True, cache_dir=str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_missing_local_file_is_explained(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(RuntimeError) as info:
        timm.create_model("internimage_t_1k_224", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))
    message = str(info.value)
    assert str(path) in message and "does not exist" in message
    assert "internimage_t_1k_224.pth" in message and "https://huggingface.co/OpenGVLab/InternImage" in message


def test_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as info:
        timm.create_model("internimage_b_1k_224", pretrained=True, cache_dir=str(tmp_path))
    message = str(info.value)
    assert "internimage_b_1k_224.pth" in message
    assert "huggingface-cli download OpenGVLab/InternImage internimage_b_1k_224.pth" in message
    assert "pretrained_cfg_overlay=dict(file=" in message


def test_offline_error_in_a_fresh_process(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache, as a user without network would have."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    code = ("import timm, classification.models\n"
            "timm.create_model('internimage_l_22k_192to384', pretrained=True)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert result.returncode != 0
    assert ("RuntimeError: pretrained weights for 'internimage_l_22k_192to384' are not available"
            in result.stderr)
    assert "huggingface-cli download OpenGVLab/InternImage internimage_l_22k_192to384.pth" in result.stderr
