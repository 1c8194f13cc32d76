"""Key rules of the published Hugging Face repos (``OpenGVLab/internimage_*``, transformers
layout): our state_dict names with a ``model.`` prefix, and the layer-scale parameters
``gamma1``/``gamma2`` called ``layer_scale1``/``layer_scale2``. No transformers import here,
so timm loading and the converter use the same rules without it."""

from __future__ import annotations

from collections.abc import Mapping

import torch

HUB_PREFIX = "model."
# config.json: the architecture fields the published repos carry besides model_type,
# architectures and auto_map (fidelity.md), in the order the converter writes them
HUB_CONFIG_FIELDS = (
    "core_op", "channels", "depths", "groups", "layer_scale", "offset_scale", "post_norm", "mlp_ratio",
    "dw_kernel_size", "res_post_norm", "level2_post_norm", "level2_post_norm_block_ids",
    "center_feature_scale", "use_clip_projector", "remove_center", "cls_scale", "num_classes",
    "norm_layer", "act_layer", "drop_path_rate",
)
# The published repos' remote-code entry points (config.json auto_map). With
# classification.huggingface imported, transformers uses our registered classes instead.
HUB_AUTO_MAP = {
    "AutoConfig": "configuration_internimage.InternImageConfig",
    "AutoModel": "modeling_internimage.InternImageModel",
    "AutoModelForImageClassification": "modeling_internimage.InternImageModelForImageClassification",
}
HUB_ARCHITECTURES = ("InternImageModelForImageClassification",)
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


__all__ = ["HUB_ARCHITECTURES", "HUB_AUTO_MAP", "HUB_CONFIG_FIELDS", "HUB_PREFIX", "NATIVE_TO_HUB_NAMES",
           "from_hub_layout", "is_hub_layout", "to_hub_layout"]
