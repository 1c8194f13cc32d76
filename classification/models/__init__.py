"""InternImage models: the backbone definition, named variants and ``build_model``."""

from __future__ import annotations

from yacs.config import CfgNode

from . import registry  # noqa: F401  (registers the published names with timm)
from .checkpoint import LoadReport, load_pretrained, read_state_dict, strip_prefix
from .intern_image import InternImage
from .intern_image_meta_former import (
    InternImageMetaFormer,
    encode_spatial,
    encode_temporal,
    is_meta_model,
    load_pretrained_meta,
)
from .variants import VARIANTS

# MODEL.TYPE -> model class
MODEL_TYPES: dict[str, type[InternImage]] = {
    "intern_image": InternImage,
    "intern_image_meta_former": InternImageMetaFormer,
}
META_DIM = 64  # the published meta-former's metadata embedding width


def build_model(config: CfgNode) -> InternImage:
    """The model a yacs config describes: MODEL.TYPE 'intern_image' (InternImage) or
    'intern_image_meta_former' (InternImageMetaFormer, the published iNat18 model, which also
    takes each image's date and location: ``model([img, temporal, spatial])``)."""
    model_type = config.MODEL.TYPE
    if model_type not in MODEL_TYPES:
        raise ValueError(f"MODEL.TYPE must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
    c = config.MODEL.INTERN_IMAGE
    extra = {"meta_dim": META_DIM} if model_type == "intern_image_meta_former" else {}
    return MODEL_TYPES[model_type](
        core_op=c.CORE_OP, channels=c.CHANNELS, depths=c.DEPTHS, groups=c.GROUPS,
        num_classes=config.MODEL.NUM_CLASSES, mlp_ratio=c.MLP_RATIO, drop_rate=config.MODEL.DROP_RATE,
        drop_path_rate=config.MODEL.DROP_PATH_RATE, drop_path_type=config.MODEL.DROP_PATH_TYPE,
        layer_scale=c.LAYER_SCALE, offset_scale=c.OFFSET_SCALE, post_norm=c.POST_NORM,
        with_cp=config.TRAIN.USE_CHECKPOINT, dw_kernel_size=c.DW_KERNEL_SIZE,
        use_clip_projector=c.USE_CLIP_PROJECTOR, level2_post_norm=c.LEVEL2_POST_NORM,
        level2_post_norm_block_ids=c.LEVEL2_POST_NORM_BLOCK_IDS, res_post_norm=c.RES_POST_NORM,
        center_feature_scale=c.CENTER_FEATURE_SCALE, remove_center=c.REMOVE_CENTER, **extra)


__all__ = ["MODEL_TYPES", "VARIANTS", "InternImage", "InternImageMetaFormer", "LoadReport", "build_model",
           "encode_spatial", "encode_temporal", "is_meta_model", "load_pretrained", "load_pretrained_meta",
           "read_state_dict", "strip_prefix"]
