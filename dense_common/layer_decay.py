"""Layer-wise lr decay for dense models (dense.md), as an mmengine optimizer-wrapper
constructor: ``paramwise_cfg=dict(num_layers=sum(depths), layer_decay_rate=r,
depths=depths, offset_lr_scale=s)``.

Layer id: ``backbone.patch_embed`` 0; block j of level i ``1 + j + sum(depths[:i])``;
``levels.i.downsample``/``levels.i.norm`` ``1 + sum(depths[:i+1])``; everything outside
the backbone ``num_layers + 1``. lr scale ``r ** (num_layers + 1 - id)``. Biases, norms,
1-D tensors (layer-scale gammas included) get no weight decay.

As in the published constructor, ``offset_lr_scale`` multiplies the lr of the
deformable-attention offset and reference-point projections of the heads
(``sampling_offsets``, ``reference_points``: DINO's and Mask2Former's MSDeformAttn),
which also get no weight decay; it does not touch the backbone's DCNv3 ``offset``
(so it has no effect on Mask R-CNN / Cascade heads). The composite backbone
(``backbone.cb_modules...``) falls in the ``num_layers + 1`` group, as published."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

_BACKBONE = "backbone."


def layer_id(name: str, num_layers: int, depths: Sequence[int]) -> int:
    """The layer id of a parameter of a whole model (names start with ``backbone.`` for
    the trunk)."""
    if not name.startswith(_BACKBONE):
        return num_layers + 1
    parts = name[len(_BACKBONE):].split(".")
    if parts[0] == "patch_embed":
        return 0
    if parts[0] == "levels" and len(parts) > 2:
        level = int(parts[1])
        if parts[2] == "blocks":
            return 1 + int(parts[3]) + sum(depths[:level])
        if parts[2] in ("downsample", "norm"):
            return 1 + sum(depths[:level + 1])
    return num_layers + 1


_OFFSET_KEYS = ("sampling_offsets", "reference_points")


def _is_offset(name: str) -> bool:
    return any(key in name for key in _OFFSET_KEYS)


def _no_weight_decay(name: str, param: nn.Parameter) -> bool:
    # norm weights and layer-scale gammas are the 1-D tensors
    return param.ndim <= 1 or name.endswith(".bias") or "sampling_offsets" in name


class CustomLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Registered as ``CustomLayerDecayOptimizerConstructor`` by mmdet_custom and
    mmseg_custom; one parameter group per (layer id, decay/no-decay)."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = self.paramwise_cfg
        try:
            depths = [int(d) for d in cfg["depths"]]
            decay_rate = float(cfg["layer_decay_rate"])
        except KeyError as error:
            raise KeyError(f"paramwise_cfg of CustomLayerDecayOptimizerConstructor needs {error.args[0]!r} "
                           "(dict(num_layers=sum(depths), layer_decay_rate=r, depths=depths))") from None
        num_layers = int(cfg.get("num_layers", sum(depths)))
        if num_layers != sum(depths):
            raise ValueError(f"paramwise_cfg num_layers={num_layers} must equal sum(depths)={sum(depths)}")
        offset_lr_scale = float(cfg.get("offset_lr_scale", 1.0))
        groups: dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            decay = not _no_weight_decay(name, param)
            lid = layer_id(name, num_layers, depths)
            scale = decay_rate ** (num_layers + 1 - lid)
            is_offset = _is_offset(name) and offset_lr_scale != 1.0
            if is_offset:
                scale *= offset_lr_scale
            key = f"layer_{lid}_{'decay' if decay else 'no_decay'}{'_offset' if is_offset else ''}"
            group = groups.setdefault(key, {
                "params": [], "lr_scale": scale, "lr": scale * self.base_lr,
                "weight_decay": self.base_wd if decay else 0.0})
            group["params"].append(param)
        rank, _ = get_dist_info()
        if rank == 0:
            summary = ", ".join(f"{k}: lr x{v['lr_scale']:.4g} ({len(v['params'])})" for k, v in
                                sorted(groups.items(), key=lambda kv: kv[1]["lr_scale"]))
            print_log(f"layer-wise lr decay {decay_rate} over {num_layers} layers: {summary}",
                      logger="current")
        params.extend(groups.values())
