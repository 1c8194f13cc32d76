"""``timm.create_model(name, pretrained=True)`` with the file neither cached nor reachable
fails at once with the how-to-get-it message, instead of retrying the Hub for ~30 s."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import timm

import classification.models  # noqa: F401 - registers the InternImage names


def test_unreachable_hub_fails_fast_with_the_download_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # a name that never resolves (RFC 2606 .invalid): offline as a machine without DNS is;
    # hf_hub_download alone would retry five times with back-off (~26 s)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://huggingface.invalid")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"internimage_t_1k_224\.pth could not be fetched .* unreachable"):
        timm.create_model("internimage_t_1k_224", pretrained=True, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 8


def test_extract_feature_without_resume_warns_about_random_weights(tmp_path):
    from PIL import Image
    from skimage import data

    from classification.extract_feature import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("DATA:\n  IMG_SIZE: 32\nMODEL:\n  NUM_CLASSES: 3\n  INTERN_IMAGE:\n    CHANNELS: 16\n"
                   "    DEPTHS: [1, 1, 1, 1]\n    GROUPS: [1, 2, 4, 8]\n")
    Image.fromarray(data.astronaut()).resize((32, 32)).save(tmp_path / "photo.png")
    with pytest.warns(UserWarning, match="no --resume: .* RANDOM weights"):
        main(["--cfg", str(cfg), "--img", str(tmp_path / "photo.png"), "--keys", "patch_embed",
              "--device", "cpu"])
