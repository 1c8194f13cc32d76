"""TRAIN.OPTIMIZER.DCN_LR_MUL as published: it scales the DCN parameters' lr only together
with layer-wise lr decay, so the five ``without_lr_decay`` L/XL/H/G configs (which keep
DCN_LR_MUL 0.1 from their base) train every parameter, DCN offsets included, at 1x.
Models on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classification.config import load_config_file
from classification.models import build_model
from classification.optimizer import build_param_groups

CONFIG_DIR = Path(__file__).resolve().parents[2] / "classification" / "configs"
WITHOUT_DECAY = [
    "internimage_l_22kto1k_384",
    "internimage_xl_22kto1k_384",
    "internimage_h_22kto1k_384",
    "internimage_h_22kto1k_640",
    "internimage_g_22kto1k_512",
]
DCN_NAMES = ("offset", "attention_weights", "center_feature_scale_proj", "alpha_beta")


def _groups(path: Path):
    config = load_config_file(str(path))
    with torch.device("meta"):
        model = build_model(config)
    groups = build_param_groups(config, model)
    return config, model, {name: g["lr_scale"] for g in groups for name in g["param_names"]}


@pytest.mark.parametrize("stem", WITHOUT_DECAY)
def test_without_lr_decay_trains_dcn_offsets_at_1x(stem):
    config, _, scales = _groups(CONFIG_DIR / "without_lr_decay" / f"{stem}.yaml")
    assert config.TRAIN.LR_LAYER_DECAY is False
    assert config.TRAIN.OPTIMIZER.DCN_LR_MUL == 0.1  # set, and inert without layer decay
    dcn = [n for n in scales if any(key in n for key in DCN_NAMES)]
    assert dcn and any(n.endswith("dcn.offset.weight") for n in dcn)
    assert {scales[n] for n in scales} == {1.0}


def test_with_lr_decay_dcn_lr_mul_applies():
    """The same L config with layer decay: DCN offsets get their layer's scale x 0.1."""
    config, model, scales = _groups(CONFIG_DIR / "internimage_l_22kto1k_384.yaml")
    assert config.TRAIN.LR_LAYER_DECAY is True
    layer = model.layer_decay_scales(config.TRAIN.LR_LAYER_DECAY_RATIO)
    for name in ("levels.1.blocks.0.dcn.offset.weight", "levels.3.blocks.4.dcn.offset.bias"):
        assert scales[name] == pytest.approx(layer[name] * 0.1)
    assert scales["levels.1.blocks.0.mlp.fc1.weight"] == pytest.approx(
        layer["levels.1.blocks.0.mlp.fc1.weight"]
    )
    assert scales["levels.1.blocks.0.mlp.fc1.weight"] < 1.0
