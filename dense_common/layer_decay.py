"""Layer-wise lr decay for dense models, as the published ``CustomLayerDecayOptimizerConstructor``
computes it (dense_fidelity.md, last section), as an mmengine optimizer-wrapper constructor:
``paramwise_cfg=dict(num_layers=sum(depths), layer_decay_rate=r, depths=depths,
[offset_lr_scale=s], [dino_head=False], [backbone_small_lr=False])``.

The published rule is written on the parameter names of the published (mmdet 2 /
mmseg 0.x) models, so each name is first translated to its published form
(``dense_common.published_keys.to_published``: e.g. mmdet 3's DINO ``level_embed`` is the
published ``bbox_head.transformer.level_embeds``, layer 0). With ``L = num_layers + 2``:

- layer id 0: ``backbone.patch_embed*``, any name containing ``level_embeds``; in the
  segmentation tree also ``decode_head.{mask_embed, cls_embed, level_embed, query_embed,
  query_feat}`` and ``backbone.cb_modules.0.patch_embed``;
- ``backbone.levels.{i}.{part}.{j}...`` (part not downsample/norm: blocks, level 2's
  post_norms): ``j + 1 + sum(depths[:i])``;
- ``backbone.levels.{i}.{downsample,norm}...``: ``1 + sum(depths[:i+1])``, but
  ``1 + sum(depths[:3])`` for the last level;
- anything else ``L - 1`` (necks, heads, the composite backbone's ``cb_modules``).

lr scale ``r ** (L - 1 - id)``; ``backbone_small_lr`` multiplies every scale below 1 by
0.1. ``offset_lr_scale`` multiplies names containing ``sampling_offsets`` or
``reference_points``: anywhere in the detection tree (DINO's deformable attention), only
with ``backbone`` in the name in the segmentation tree (never, with InternImage).
``dino_head``: such names at layer ``L - 1`` get x0.1 instead. No weight decay for 1-D
tensors, ``.bias``, and names containing ``relative_position``, ``norm`` or
``sampling_offsets``.

The tree (detection / segmentation) is the framework the model comes from: a model whose
class derives from mmdet's is the detection tree's, from mmseg's the segmentation tree's."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from .published_keys import to_published

DETECTION = "detection"
SEGMENTATION = "segmentation"
TREES = (DETECTION, SEGMENTATION)

_SEGMENTATION_LAYER0 = tuple(
    f"decode_head.{name}" for name in ("mask_embed", "cls_embed", "level_embed", "query_embed", "query_feat")
) + ("backbone.cb_modules.0.patch_embed",)
_OFFSET_KEYS = ("sampling_offsets", "reference_points")
_NO_DECAY_KEYS = ("relative_position", "norm", "sampling_offsets")
_PARAMWISE_KEYS = {
    "num_layers",
    "layer_decay_rate",
    "depths",
    "offset_lr_scale",
    "dino_head",
    "backbone_small_lr",
}


def layer_id(name: str, num_layers: int, depths: Sequence[int], tree: str = DETECTION) -> int:
    """The published layer id of a parameter by its PUBLISHED name; ``num_layers`` is the
    config's (``sum(depths)``), so ids run 0 .. num_layers + 1."""
    top = num_layers + 1
    if name.startswith("backbone.patch_embed") or "level_embeds" in name:
        return 0
    if tree == SEGMENTATION and name.startswith(_SEGMENTATION_LAYER0):
        return 0
    if name.startswith("backbone.levels."):
        parts = name.split(".")
        level = int(parts[2])
        if parts[3] not in ("downsample", "norm"):
            return int(parts[4]) + 1 + sum(depths[:level])
        return 1 + sum(depths[: min(level, 2) + 1])
    return top


def is_offset_param(name: str, tree: str = DETECTION) -> bool:
    """Whether ``offset_lr_scale`` applies to this published name."""
    if not any(key in name for key in _OFFSET_KEYS):
        return False
    return tree == DETECTION or "backbone" in name


def no_weight_decay(name: str, ndim: int) -> bool:
    """The published no-decay rule on a published name."""
    return ndim == 1 or name.endswith(".bias") or any(key in name for key in _NO_DECAY_KEYS)


def lr_scale(
    name: str,
    *,
    num_layers: int,
    depths: Sequence[int],
    layer_decay_rate: float,
    offset_lr_scale: float = 1.0,
    dino_head: bool = False,
    backbone_small_lr: bool = False,
    tree: str = DETECTION,
) -> float:
    """The published lr multiplier of a parameter by its published name."""
    lid = layer_id(name, num_layers, depths, tree)
    scale = layer_decay_rate ** (num_layers + 1 - lid)
    if backbone_small_lr and scale < 1:
        scale *= 0.1
    if dino_head and lid == num_layers + 1 and any(key in name for key in _OFFSET_KEYS):
        return scale * 0.1
    if is_offset_param(name, tree):
        scale *= offset_lr_scale
    return scale


def model_tree(model: nn.Module) -> str:
    """``DETECTION`` for mmdet models, ``SEGMENTATION`` for mmseg ones (by class hierarchy).
    The driving baselines (mmengine models in mmdet's registry) ship the detection tree's
    constructor, so they follow its rule."""
    packages = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
    if packages & {"mmdet", "mmdet_custom", "autonomous_driving"}:
        return DETECTION
    if packages & {"mmseg", "mmseg_custom"}:
        return SEGMENTATION
    raise TypeError(
        f"CustomLayerDecayOptimizerConstructor needs an mmdet, mmseg or driving model (the published "
        f"rule differs per tree), got {type(model).__module__}.{type(model).__name__}"
    )


class CustomLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Registered as ``CustomLayerDecayOptimizerConstructor`` by mmdet_custom and
    mmseg_custom; one parameter group per (lr scale, weight decay)."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - _PARAMWISE_KEYS
        if unknown:
            raise KeyError(
                f"paramwise_cfg of CustomLayerDecayOptimizerConstructor: unknown keys {sorted(unknown)} "
                f"(known: {sorted(_PARAMWISE_KEYS)})"
            )
        try:
            depths = [int(d) for d in cfg["depths"]]
            decay_rate = float(cfg["layer_decay_rate"])
        except KeyError as error:
            raise KeyError(
                f"paramwise_cfg of CustomLayerDecayOptimizerConstructor needs {error.args[0]!r} "
                "(dict(num_layers=sum(depths), layer_decay_rate=r, depths=depths))"
            ) from None
        num_layers = int(cfg.get("num_layers", sum(depths)))
        if num_layers != sum(depths):
            raise ValueError(f"paramwise_cfg num_layers={num_layers} must equal sum(depths)={sum(depths)}")
        tree = model_tree(module)
        rule = dict(
            num_layers=num_layers,
            depths=depths,
            layer_decay_rate=decay_rate,
            offset_lr_scale=float(cfg.get("offset_lr_scale", 1.0)),
            dino_head=bool(cfg.get("dino_head", False)),
            backbone_small_lr=bool(cfg.get("backbone_small_lr", False)),
            tree=tree,
        )
        named = list(module.named_parameters())
        cb = any(name.startswith("backbone.cb_modules.") for name, _ in named)
        groups: dict[tuple[float, float], dict] = {}
        for name, param in named:
            if not param.requires_grad:
                continue
            published = to_published(name, cb=cb)
            weight_decay = 0.0 if no_weight_decay(published, param.ndim) else self.base_wd
            scale = lr_scale(published, **rule)
            group = groups.setdefault(
                (scale, weight_decay),
                {"params": [], "lr_scale": scale, "lr": scale * self.base_lr, "weight_decay": weight_decay},
            )
            group["params"].append(param)
        rank, _ = get_dist_info()
        if rank == 0:
            summary = ", ".join(
                f"lr x{scale:.4g} wd {wd:g} ({len(g['params'])})" for (scale, wd), g in sorted(groups.items())
            )
            print_log(
                f"layer-wise lr decay {decay_rate} over {num_layers} layers ({tree} rule): {summary}",
                logger="current",
            )
        # a stable order (by scale, then decay) keeps optimizer state loadable across runs
        params.extend(groups[key] for key in sorted(groups))
