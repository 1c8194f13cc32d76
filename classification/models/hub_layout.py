"""Key rules of the published Hugging Face repos (``OpenGVLab/internimage_*``, transformers
layout): our state_dict names with a ``model.`` prefix, and the layer-scale parameters
``gamma1``/``gamma2`` called ``layer_scale1``/``layer_scale2``. No transformers import here,
so timm loading and the converter use the same rules without it."""

from __future__ import annotations

from collections.abc import Mapping

import torch

HUB_PREFIX = "model."
NATIVE_TO_HUB_NAMES = {"gamma1": "layer_scale1", "gamma2": "layer_scale2"}
HUB_TO_NATIVE_NAMES = {hub: native for native, hub in NATIVE_TO_HUB_NAMES.items()}


def _rename_leaf(key: str, names: Mapping[str, str]) -> str:
    head, dot, leaf = key.rpartition(".")
    return f"{head}{dot}{names[leaf]}" if leaf in names else key


def is_hub_layout(state_dict: Mapping[str, object]) -> bool:
    """Whether every key carries the Hub repos' ``model.`` prefix."""
    return bool(state_dict) and all(str(k).startswith(HUB_PREFIX) for k in state_dict)


def to_hub_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> the published Hub names (``model.`` prefix, ``layer_scale1/2``)."""
    return {HUB_PREFIX + _rename_leaf(k, NATIVE_TO_HUB_NAMES): v for k, v in state_dict.items()}


def from_hub_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published Hub names -> ours. Raises ``ValueError`` when a key lacks the prefix."""
    if not is_hub_layout(state_dict):
        stray = [k for k in state_dict if not str(k).startswith(HUB_PREFIX)][:5]
        raise ValueError(f"not a Hub-layout state_dict: keys without the {HUB_PREFIX!r} prefix, e.g. {stray}")
    return {_rename_leaf(k[len(HUB_PREFIX):], HUB_TO_NATIVE_NAMES): v for k, v in state_dict.items()}


__all__ = ["HUB_PREFIX", "NATIVE_TO_HUB_NAMES", "from_hub_layout", "is_hub_layout", "to_hub_layout"]
