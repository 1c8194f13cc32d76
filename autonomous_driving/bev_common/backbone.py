"""The InternImage image backbone of the driving configs: the repository's one dense backbone
(``dense_common.InternImageBackbone``), registered in mmdet's ``MODELS`` as ``InternImage``
by the detection plugin (``detection/mmdet_custom``). Importing this module imports that
plugin, so ``img_backbone=dict(type='InternImage', ...)`` builds under ``default_scope='mmdet'``;
no second copy is registered.

The published driving configs need nothing beyond it: ``core_op='DCNv3'``, ``with_cp``,
``out_indices=(1, 2, 3)`` and ``init_cfg=dict(type='Pretrained', checkpoint=<Mask R-CNN
.pth or URL>)`` are dense-backbone arguments already; its loader takes the ``backbone.``
entries of a detection checkpoint, strips DDP ``module.`` prefixes and unwraps
``{'state_dict': ...}`` / ``{'model': ...}`` files (``classification.models.checkpoint``).

Importing the plugin also applies ``dense_common.stack_compat`` (the torch 2.14 checkpoint
loader and mmcv's MSDA on the ops_dcnv3 kernels), which the BEV attentions rely on."""

from __future__ import annotations

import mmdet_custom  # noqa: F401  (registers InternImage in mmdet's MODELS, applies stack_compat)
from mmdet.registry import MODELS

from dense_common import InternImageBackbone

if MODELS.get("InternImage") is not InternImageBackbone:  # a stale or foreign registration
    raise ImportError(
        "mmdet's MODELS['InternImage'] is not dense_common.InternImageBackbone; "
        "detection/mmdet_custom must be the package that registers it"
    )

InternImage = InternImageBackbone

__all__ = ["InternImage", "InternImageBackbone"]
