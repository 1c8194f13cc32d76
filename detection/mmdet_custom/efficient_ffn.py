"""``EfficientFFN``: the published G config's memory-saving FFN for the DINO transformer.

It computes exactly mmcv's ``FFN`` (two layers, ``layers.0.0`` and ``layers.1``, the same
parameters, so checkpoints of either load into the other), but the hidden layer in
``split`` slices summed at the end, each slice optionally under activation checkpointing
(``use_checkpoint``): only a ``1/split`` slice of the ``feedforward_channels``-wide
activation is alive at a time. The published module stored the slices as separate
``fc1_{k}`` / ``fc2_{k}`` / ``fc2_bias`` tensors; ``dense_common.published_keys`` fuses
them into the plain layout when such a checkpoint loads.

mmdet 3's deformable-DETR layers build their FFN as ``FFN(**ffn_cfg)``; ``install()``
lets an ``ffn_cfg`` carrying a ``type`` (``dict(type='EfficientFFN', split=4, ...)``) build
that registered module instead. Without ``type`` nothing changes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from mmdet.registry import MODELS
from torch.utils.checkpoint import checkpoint


@MODELS.register_module()
class EfficientFFN(FFN):
    def __init__(self, *, split: int = 4, use_checkpoint: bool = False, **ffn_kwargs):
        super().__init__(**ffn_kwargs)
        if self.num_fcs != 2:
            raise ValueError(f"EfficientFFN has two layers (num_fcs=2), got num_fcs={self.num_fcs}")
        if split < 1 or self.feedforward_channels % split:
            raise ValueError(f"split must divide feedforward_channels={self.feedforward_channels}, "
                             f"got {split}")
        self.split = int(split)
        self.use_checkpoint = bool(use_checkpoint)

    def _slice(self, x: torch.Tensor, k: int) -> torch.Tensor:
        fc1, activate, hidden_drop = self.layers[0]
        fc2 = self.layers[1]
        width = self.feedforward_channels // self.split
        rows = slice(k * width, (k + 1) * width)
        hidden = hidden_drop(activate(F.linear(x, fc1.weight[rows], fc1.bias[rows])))
        return F.linear(hidden, fc2.weight[:, rows])

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        out = self.layers[1].bias
        for k in range(self.split):
            if self.use_checkpoint and self.training and x.requires_grad:
                out = out + checkpoint(self._slice, x, k, use_reentrant=False)
            else:
                out = out + self._slice(x, k)
        out = self.gamma2(self.layers[2](out))
        if not self.add_identity:
            return self.dropout_layer(out)
        return (x if identity is None else identity) + self.dropout_layer(out)


def _ffn_from_cfg(**ffn_cfg) -> FFN:
    """``FFN(**cfg)``, or the registered module named by ``cfg['type']``."""
    if "type" in ffn_cfg:
        return MODELS.build(ffn_cfg)
    return FFN(**ffn_cfg)


def install() -> None:
    """Lets mmdet's deformable-DETR (and DINO) layers take a typed ``ffn_cfg``."""
    from mmdet.models.layers.transformer import deformable_detr_layers

    if deformable_detr_layers.FFN is not _ffn_from_cfg:
        deformable_detr_layers.FFN = _ffn_from_cfg
