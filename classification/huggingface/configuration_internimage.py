"""``InternImageConfig``: the ``config.json`` of the published ``OpenGVLab/internimage_*`` Hub
repos (``model_type: internimage``), read natively by transformers."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from classification.models.hub_layout import HUB_ARCHITECTURES, HUB_AUTO_MAP, HUB_CONFIG_FIELDS


class InternImageConfig(PretrainedConfig):
    """Architecture of an InternImage (the arguments of ``classification.models.InternImage``).

    ``num_classes`` sizes the classifier of ``InternImageForImageClassification`` (0: none).
    ``drop_rate``, ``drop_path_type`` and ``with_cp`` (activation checkpointing) are training
    options that published repos may omit."""

    model_type = "internimage"

    core_op: str = "DCNv3"
    channels: int = 64
    depths: list[int] | tuple[int, ...] = (4, 4, 18, 4)
    groups: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    layer_scale: float | None = None
    offset_scale: float = 1.0
    post_norm: bool = False
    mlp_ratio: float = 4.0
    dw_kernel_size: int | None = None
    res_post_norm: bool = False
    level2_post_norm: bool = False
    level2_post_norm_block_ids: list[int] | tuple[int, ...] | None = None
    center_feature_scale: bool = False
    use_clip_projector: bool = False
    remove_center: bool = False
    cls_scale: float = 1.5
    num_classes: int = 1000
    norm_layer: str = "LN"
    act_layer: str = "GELU"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    drop_path_type: str = "linear"
    with_cp: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        self.depths = list(self.depths)
        self.groups = list(self.groups)
        if self.level2_post_norm_block_ids is not None:
            self.level2_post_norm_block_ids = list(self.level2_post_norm_block_ids)
        if len(self.depths) != len(self.groups):
            raise ValueError(f"depths {self.depths} and groups {self.groups} must have one entry per level")
        super().__post_init__(**kwargs)

    def internimage_kwargs(self) -> dict[str, Any]:
        """The ``classification.models.InternImage`` constructor arguments."""
        return dict(
            core_op=self.core_op, channels=self.channels, depths=tuple(self.depths),
            groups=tuple(self.groups),
            num_classes=self.num_classes, mlp_ratio=self.mlp_ratio, drop_rate=self.drop_rate,
            drop_path_rate=self.drop_path_rate, drop_path_type=self.drop_path_type, act_layer=self.act_layer,
            norm_layer=self.norm_layer, layer_scale=self.layer_scale, offset_scale=self.offset_scale,
            post_norm=self.post_norm, cls_scale=self.cls_scale, with_cp=self.with_cp,
            dw_kernel_size=self.dw_kernel_size, use_clip_projector=self.use_clip_projector,
            level2_post_norm=self.level2_post_norm,
            level2_post_norm_block_ids=(tuple(self.level2_post_norm_block_ids)
                                        if self.level2_post_norm_block_ids is not None else None),
            res_post_norm=self.res_post_norm, center_feature_scale=self.center_feature_scale,
            remove_center=self.remove_center)


__all__ = ["HUB_ARCHITECTURES", "HUB_AUTO_MAP", "HUB_CONFIG_FIELDS", "InternImageConfig"]
