"""Hugging Face transformers support for InternImage, natively (no remote code).

    import classification.huggingface  # registers model_type "internimage" with the Auto classes
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained("OpenGVLab/internimage_t_1k_224")
    processor = AutoImageProcessor.from_pretrained("OpenGVLab/internimage_t_1k_224")
    logits = model(**processor(images=image, return_tensors="pt")).logits

The published repos' ``config.json`` names remote code in ``auto_map``; with this package
imported transformers builds our classes instead (the registered local classes take
precedence, with or without ``trust_remote_code``). Weights load from ``model.safetensors``
or ``pytorch_model.bin`` with the published names (``model.`` prefix, ``layer_scale1/2``),
and ``save_pretrained`` writes those names again. ``convert.py`` turns a published ``.pth``
into such a folder."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

from classification.models.hub_layout import NATIVE_TO_HUB_NAMES

from .configuration_internimage import HUB_AUTO_MAP, HUB_CONFIG_FIELDS, InternImageConfig
from .modeling_internimage import (
    InternImageForImageClassification,
    InternImageModel,
    InternImageModelForImageClassification,
    InternImagePreTrainedModel,
)


def _register() -> None:
    AutoConfig.register(InternImageConfig.model_type, InternImageConfig, exist_ok=True)
    AutoModel.register(InternImageConfig, InternImageModel, exist_ok=True)
    AutoModelForImageClassification.register(InternImageConfig, InternImageForImageClassification,
                                             exist_ok=True)
    # Hub names -> ours on load (reversed by save_pretrained): ...layer_scale1 -> ...gamma1. Plain
    # names, no regex anchors (transformers reverses these patterns textually); neither name
    # occurs anywhere else in an InternImage key.
    renames = [WeightRenaming(hub, native) for native, hub in NATIVE_TO_HUB_NAMES.items()]
    register_checkpoint_conversion_mapping(InternImageConfig.model_type, renames, overwrite=True)


_register()

__all__ = ["HUB_AUTO_MAP", "HUB_CONFIG_FIELDS", "InternImageConfig", "InternImageForImageClassification",
           "InternImageModel", "InternImageModelForImageClassification", "InternImagePreTrainedModel"]
