"""``RelationshipHead`` (driving_openlane_params.md §5): topology logits between every pair of
queries of two detectors' last decoder layers (lane-lane, lane-traffic element), supervised
only between Hungarian-matched queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn


class MLP(nn.Module):
    """``layers`` = Linear x num_layers with ReLU between (the published name)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP: num_layers must be >= 1, got {num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = torch.relu(x)
        return x


AssignList = Sequence[tuple[torch.Tensor, torch.Tensor]]


@MODELS.register_module()
class RelationshipHead(BaseModule):
    """``forward(feats_o1 (L, B, N1, C1), feats_o2 (L, B, N2, C2))`` -> logits (B, N1, N2, 1)
    from the last layer; ``loss`` / ``forward_train`` against the matched ground truth;
    ``get_relationship`` -> per sample sigmoid (N1, N2). PyTorch default init."""

    def __init__(
        self,
        in_channels_o1: int = 256,
        in_channels_o2: int | None = None,
        shared_param: bool = True,
        loss_rel: Mapping = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=5.0),
        init_cfg: Mapping | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels_o2 = in_channels_o1 if in_channels_o2 is None else in_channels_o2
        if shared_param and in_channels_o1 != in_channels_o2:
            raise ValueError(
                f"RelationshipHead: shared_param needs in_channels_o1 == in_channels_o2, got "
                f"{in_channels_o1} and {in_channels_o2}"
            )
        self.shared_param = shared_param
        self.MLP_o1 = MLP(in_channels_o1, in_channels_o1, 128, 3)
        self.MLP_o2 = self.MLP_o1 if shared_param else MLP(in_channels_o2, in_channels_o2, 128, 3)
        self.classifier = MLP(256, 256, 1, 3)
        self.loss_rel = MODELS.build(dict(loss_rel))

    def forward(self, feats_o1: torch.Tensor, feats_o2: torch.Tensor) -> torch.Tensor:
        if feats_o1.dim() != 4 or feats_o2.dim() != 4 or feats_o1.shape[1] != feats_o2.shape[1]:
            raise ValueError(
                f"RelationshipHead: features must be (layers, B, N, C) with the same B, got "
                f"{tuple(feats_o1.shape)} and {tuple(feats_o2.shape)}"
            )
        o1 = self.MLP_o1(feats_o1[-1])  # (B, N1, 128)
        o2 = self.MLP_o2(feats_o2[-1])  # (B, N2, 128)
        n1, n2 = o1.shape[1], o2.shape[1]
        pairs = torch.cat([o1[:, :, None].expand(-1, -1, n2, -1), o2[:, None].expand(-1, n1, -1, -1)], -1)
        return self.classifier(pairs)

    @staticmethod
    def targets(
        n1: int,
        n2: int,
        assign_o1: tuple[torch.Tensor, torch.Tensor],
        assign_o2: tuple[torch.Tensor, torch.Tensor],
        gt_adj: torch.Tensor,
    ) -> torch.Tensor:
        """(N1, N2) 0/1: ``T[pos_i x pos_j] = gt_adj[gt_i][:, gt_j]``, 0 elsewhere."""
        pos_i, gt_i = assign_o1
        pos_j, gt_j = assign_o2
        target = torch.zeros((n1, n2), dtype=torch.long, device=pos_i.device)
        if len(pos_i) and len(pos_j):
            adj = torch.as_tensor(gt_adj).to(pos_i.device).long()
            target[pos_i[:, None], pos_j[None]] = adj[gt_i][:, gt_j]
        return target

    def loss(
        self,
        rel_logits: torch.Tensor,
        assign_o1: AssignList,
        assign_o2: AssignList,
        gt_adjs: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        bs, n1, n2, _ = rel_logits.shape
        if not (len(assign_o1) == len(assign_o2) == len(gt_adjs) == bs):
            raise ValueError(
                f"RelationshipHead.loss: {len(assign_o1)}/{len(assign_o2)} assignments and "
                f"{len(gt_adjs)} adjacency matrices for a batch of {bs}"
            )
        targets = []
        for b in range(bs):
            adj = torch.as_tensor(gt_adjs[b])
            gi, gj = assign_o1[b][1], assign_o2[b][1]
            if (len(gi) and int(gi.max()) >= adj.shape[0]) or (
                len(gj) and adj.dim() == 2 and int(gj.max()) >= adj.shape[1]
            ):
                raise ValueError(
                    f"RelationshipHead.loss: sample {b} adjacency {tuple(adj.shape)} is smaller "
                    "than the matched ground-truth indices"
                )
            targets.append(self.targets(n1, n2, assign_o1[b], assign_o2[b], adj))
        labels = 1 - torch.stack(targets).reshape(-1)  # class 0 = connected, 1 = background
        loss = self.loss_rel(rel_logits.reshape(-1, 1), labels)  # mean over all pairs, no avg_factor
        return {"loss_rel": torch.nan_to_num(loss)}

    def forward_train(
        self,
        feats_o1: torch.Tensor,
        assign_o1: AssignList,
        feats_o2: torch.Tensor,
        assign_o2: AssignList,
        gt_adjs: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        return self.loss(self(feats_o1, feats_o2), assign_o1, assign_o2, gt_adjs)

    def get_relationship(self, feats_o1: torch.Tensor, feats_o2: torch.Tensor) -> list[torch.Tensor]:
        rel = self(feats_o1, feats_o2).squeeze(-1).sigmoid()
        return [rel[b] for b in range(rel.shape[0])]


__all__ = ["MLP", "RelationshipHead"]
