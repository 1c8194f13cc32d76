"""InternImage models: the backbone definition, named variants and ``build_model``."""

from __future__ import annotations

from yacs.config import CfgNode

from . import registry  # noqa: F401  (registers the published names with timm)
from .checkpoint import LoadReport, load_pretrained, read_state_dict, strip_prefix
from .intern_image import InternImage
from .intern_image_meta import InternImageMeta, encode_meta, is_meta_model, load_pretrained_meta
from .variants import VARIANTS


def build_model(config: CfgNode) -> InternImage:
    """The model a yacs config describes: MODEL.TYPE 'intern_image', or 'intern_image_meta'
    (InternImageMeta, which also takes per-image location/date metadata; MODEL.META.DIM is
    the hidden width of its metadata MLP, 0 = derived)."""
    model_type = config.MODEL.TYPE
    if model_type not in ("intern_image", "intern_image_meta"):
        raise ValueError(f"MODEL.TYPE must be 'intern_image' or 'intern_image_meta', got {model_type!r}")
    c = config.MODEL.INTERN_IMAGE
    extra = {}
    if model_type == "intern_image_meta":
        meta = config.MODEL.get("META")
        extra["meta_hidden_dim"] = (meta.DIM if meta is not None else 0) or None
    return (InternImageMeta if model_type == "intern_image_meta" else InternImage)(
        core_op=c.CORE_OP, channels=c.CHANNELS, depths=c.DEPTHS, groups=c.GROUPS,
        num_classes=config.MODEL.NUM_CLASSES, mlp_ratio=c.MLP_RATIO, drop_rate=config.MODEL.DROP_RATE,
        drop_path_rate=config.MODEL.DROP_PATH_RATE, drop_path_type=config.MODEL.DROP_PATH_TYPE,
        layer_scale=c.LAYER_SCALE, offset_scale=c.OFFSET_SCALE, post_norm=c.POST_NORM,
        with_cp=config.TRAIN.USE_CHECKPOINT, dw_kernel_size=c.DW_KERNEL_SIZE,
        use_clip_projector=c.USE_CLIP_PROJECTOR, level2_post_norm=c.LEVEL2_POST_NORM,
        level2_post_norm_block_ids=c.LEVEL2_POST_NORM_BLOCK_IDS, res_post_norm=c.RES_POST_NORM,
        center_feature_scale=c.CENTER_FEATURE_SCALE, remove_center=c.REMOVE_CENTER, **extra)


__all__ = ["VARIANTS", "InternImage", "InternImageMeta", "LoadReport", "build_model", "encode_meta",
           "is_meta_model", "load_pretrained", "load_pretrained_meta", "read_state_dict", "strip_prefix"]
