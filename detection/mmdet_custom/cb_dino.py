"""``CBDINO``: mmdet's DINO on a composite backbone (``CBInternImage``).

Training supervises both trunks, as the published CB-InternImage DINO does: the neck
runs on each trunk's features and the assisting trunk's maps join the batch as extra
images with the same targets, so one DINO head pass computes both losses. Inference uses
the lead trunk only."""

from __future__ import annotations

import torch
from mmdet.models.detectors import DINO
from mmdet.registry import MODELS
from mmdet.structures import SampleList


@MODELS.register_module()
class CBDINO(DINO):
    def extract_feat(self, batch_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Neck features of the lead trunk (what prediction uses)."""
        return self.neck(self.backbone(batch_inputs)[-1])

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples: SampleList) -> dict:
        trunk_features = [self.neck(features) for features in self.backbone(batch_inputs)]
        img_feats = tuple(torch.cat(level, dim=0) for level in zip(*trunk_features))
        samples = list(batch_data_samples) * len(trunk_features)
        head_inputs = self.forward_transformer(img_feats, samples)
        return self.bbox_head.loss(**head_inputs, batch_data_samples=samples)
