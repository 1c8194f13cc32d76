"""``CBDINO``: mmdet's DINO on a composite backbone (``CBInternImage``).

Training supervises both trunks, as the published CB-InternImage DINO does: the neck runs
on each trunk's features, one transformer pass takes both trunks' maps as one batch (same
targets twice), and the head's losses are computed per trunk, the assisting (first)
trunk's weighted by ``cb_first_weight`` (published 0.5) and logged as ``<name>0_w0.5``,
the lead trunk's as ``<name>1``. Inference uses the lead trunk only.

``rule`` names one of the published freezing rules (``FREEZE_RULES``), applied to the
published parameter names once the model is built."""

from __future__ import annotations

from collections.abc import Callable

import torch
from mmdet.models.detectors import DINO
from mmdet.registry import MODELS
from mmdet.structures import SampleList

from dense_common.published_keys import to_published


def _outside(name: str, *kept: str) -> bool:
    return "backbone" in name and not any(k in name for k in kept)


# published rule -> "freeze this parameter" (on the published names, e.g.
# bbox_head.transformer.encoder.* for the encoder)
FREEZE_RULES: dict[str, Callable[[str], bool]] = {
    "freeze_backbone_expect_level_4": lambda n: _outside(n, "backbone.cb_modules.1.levels.3"),
    "freeze_backbone_expect_0_level_1_2_3": lambda n: _outside(
        n, "backbone.cb_modules.0.levels.0", "backbone.cb_modules.1.levels.0",
        "backbone.cb_modules.2.levels.0"),
    "freeze_backbone_expect_level_3_4": lambda n: _outside(
        n, "backbone.cb_modules.1.levels.2", "backbone.cb_modules.1.levels.3"),
    "freeze_cb_first_backbone": lambda n: "backbone.cb_modules.0" in n,
    "freeze_cb_first_backbone_expect_level_4": lambda n: "backbone.cb_modules.0" in n and "levels.3" not in n,
    "freeze_backbone": lambda n: "backbone" in n,
    "freeze_backbone_encoder": lambda n: "backbone" in n or "encoder" in n,
    "freeze_backbone_neck": lambda n: "backbone" in n or "neck" in n,
    "freeze_stage_1_2": lambda n: "patch_embed" in n or "levels.0." in n or "levels.1." in n,
    "freeze_stage_1": lambda n: "patch_embed" in n or "levels.0." in n,
}


@MODELS.register_module()
class CBDINO(DINO):
    def __init__(self, *args, rule: str | None = None, cb_first_weight: float = 0.5, **kwargs):
        if rule is not None and rule not in FREEZE_RULES:
            raise ValueError(f"rule must be None or one of {sorted(FREEZE_RULES)}, got {rule!r}")
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.cb_first_weight = float(cb_first_weight)
        if rule is not None:
            frozen = FREEZE_RULES[rule]
            for name, param in self.named_parameters():
                if frozen(to_published(name, cb=True)):
                    param.requires_grad = False

    def extract_feat(self, batch_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Neck features of the lead trunk (what prediction uses)."""
        return self.neck(self.backbone(batch_inputs)[-1])

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples: SampleList) -> dict:
        trunk_features = [self.neck(features) for features in self.backbone(batch_inputs)]
        img_feats = tuple(torch.cat(level, dim=0) for level in zip(*trunk_features))
        num_images = len(batch_data_samples)
        samples = list(batch_data_samples) * len(trunk_features)
        head_inputs = self.forward_transformer(img_feats, samples)
        losses = {}
        weights = [self.cb_first_weight] + [1.0] * (len(trunk_features) - 1)
        for trunk, weight in enumerate(weights):
            images = slice(trunk * num_images, (trunk + 1) * num_images)
            trunk_losses = self.bbox_head.loss(**_batch_slice(head_inputs, images),
                                               batch_data_samples=list(batch_data_samples))
            losses.update(_renamed(trunk_losses, trunk, weight))
        return losses


def _batch_slice(head_inputs: dict, images: slice) -> dict:
    """The head inputs of the images in ``images``: decoder states and references carry the
    batch in dim 1 (dim 0 is the decoder layer), the encoder outputs in dim 0; the
    denoising layout (``dn_meta``) is the same for every image."""
    out = dict(head_inputs)
    out["hidden_states"] = head_inputs["hidden_states"][:, images]
    references = head_inputs["references"]
    out["references"] = ([r[images] for r in references] if isinstance(references, (list, tuple))
                         else references[:, images])
    out["enc_outputs_class"] = head_inputs["enc_outputs_class"][images]
    out["enc_outputs_coord"] = head_inputs["enc_outputs_coord"][images]
    return out


def _renamed(losses: dict, trunk: int, weight: float) -> dict:
    """The published naming: ``<name><trunk>``, plus ``_w<weight>`` on weighted losses."""
    out = {}
    for key, value in losses.items():
        name = f"{key}{trunk}"
        if weight != 1 and "loss" in key:
            name = f"{name}_w{weight:g}"
        out[name] = [v * weight for v in value] if isinstance(value, (list, tuple)) else value * weight
    return out
