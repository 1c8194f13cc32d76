"""InternImage with image metadata: the published iNaturalist-2018 model
(``MODEL.TYPE: intern_image_meta_former``, checkpoint ``internimage_h_22ktoinat18_384.pth``).

The input is ``[img, temporal, spatial]``: the image batch, a (N, 4) encoding of when each
image was taken and a (N, 3) encoding of where (``encode_temporal`` / ``encode_spatial``).
Two small MLPs (``meta_head_1`` on the temporal, ``meta_head_2`` on the spatial vector,
each Linear -> ReLU -> LayerNorm -> ``MetaEncoder``) embed them; their concatenation,
normalised by ``meta_norm``, feeds a second classifier ``meta_head`` whose logits are added
to the image logits. Names, shapes and the state_dict order follow the published checkpoint
(``shared/data/inat18_metaformer_keys.txt``)."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from .checkpoint import LoadReport, load_pretrained
from .intern_image import InternImage

TEMPORAL_FEATURES = 4
SPATIAL_FEATURES = 3
META_PREFIX = "meta_"
_DATE = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})")


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None (missing, empty, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def encode_temporal(date: object) -> torch.Tensor:
    """(4,) float32 from a date string ``YYYY-MM-DD...`` (as in the iNat18 json, e.g.
    ``"2017-07-04 10:31:00+00:00"``) or a ``datetime.date``: [sin(2 pi m/12), cos(2 pi m/12),
    0, 0] with m the month; the last two (hour) terms are 0 for iNat18. Anything unparsable
    (None, "", an impossible date) gives zeros."""
    if isinstance(date, (_dt.date, _dt.datetime)):
        month = date.month
    else:
        match = _DATE.match(date) if isinstance(date, str) else None
        if match is None:
            return torch.zeros(TEMPORAL_FEATURES)
        try:
            month = _dt.date(*(int(g) for g in match.groups())).month
        except ValueError:  # e.g. 2017-02-30
            return torch.zeros(TEMPORAL_FEATURES)
    angle = 2 * math.pi * month / 12
    return torch.tensor([math.sin(angle), math.cos(angle), 0.0, 0.0], dtype=torch.float32)


def encode_spatial(lat: object, lon: object) -> torch.Tensor:
    """(3,) float32 point on the unit sphere from latitude/longitude in degrees:
    [cos(lat) cos(lon), cos(lat) sin(lon), sin(lat)]. A missing, non-numeric or zero
    latitude or longitude gives zeros (the published convention for "no location")."""
    lat, lon = _number(lat), _number(lon)
    if not lat or not lon:  # None or exactly 0
        return torch.zeros(SPATIAL_FEATURES)
    a, b = math.radians(lat), math.radians(lon)
    return torch.tensor([math.cos(a) * math.cos(b), math.cos(a) * math.sin(b), math.sin(a)],
                        dtype=torch.float32)


class MetaEncoder(nn.Module):
    """Residual MLP on a metadata embedding: x + LN2(ReLU(w2(LN1(ReLU(w1(x))))))."""

    def __init__(self, dim: int):
        super().__init__()
        # registration order = the published state_dict order
        self.norm_fn1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm_fn2 = nn.LayerNorm(dim, eps=1e-5)
        self.act = nn.ReLU()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_fn1(self.act(self.w1(x)))
        return x + self.norm_fn2(self.act(self.w2(y)))


def _meta_branch(in_features: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, dim), nn.ReLU(), nn.LayerNorm(dim, eps=1e-5),
                         MetaEncoder(dim))


class InternImageMetaFormer(InternImage):
    """InternImage whose logits add a classifier over per-image date and location.

    Same arguments as ``InternImage`` plus ``meta_dim`` (width of each metadata embedding).
    ``forward([img, temporal, spatial])`` (a list or tuple); a bare image tensor counts as
    images without metadata (zero encodings, as the dataset gives for missing values)."""

    accepts_meta = True  # the trainers pass [images, temporal, spatial] to models with this flag

    def __init__(self, *args, meta_dim: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if self.num_classes <= 0:
            raise ValueError("InternImageMetaFormer needs num_classes > 0: it adds image and metadata logits")
        if meta_dim < 1:
            raise ValueError(f"meta_dim must be >= 1, got {meta_dim}")
        self.meta_dim = meta_dim
        image_head = list(self._modules)[list(self._modules).index("levels") + 1:]
        self.meta_head_1 = _meta_branch(TEMPORAL_FEATURES, meta_dim)
        self.meta_head_2 = _meta_branch(SPATIAL_FEATURES, meta_dim)
        self.meta_norm = nn.LayerNorm(2 * meta_dim, eps=1e-6)
        self.meta_head = nn.Linear(2 * meta_dim, self.num_classes)
        for name in image_head:  # the published state_dict lists the image head after the meta heads
            self._modules[name] = self._modules.pop(name)
        for module in (self.meta_head_1, self.meta_head_2, self.meta_norm, self.meta_head):
            module.apply(self._init_weights)

    def forward_meta(self, temporal: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        """(N, 4) temporal and (N, 3) spatial encodings -> the normalised (N, 2 meta_dim) embedding."""
        if temporal.ndim != 2 or temporal.shape[1] != TEMPORAL_FEATURES:
            raise ValueError(f"temporal must be (N, {TEMPORAL_FEATURES}), got {tuple(temporal.shape)}")
        if spatial.ndim != 2 or spatial.shape[1] != SPATIAL_FEATURES:
            raise ValueError(f"spatial must be (N, {SPATIAL_FEATURES}), got {tuple(spatial.shape)}")
        dtype = self.meta_head.weight.dtype
        embedded = torch.cat([self.meta_head_1(temporal.to(dtype)), self.meta_head_2(spatial.to(dtype))],
                             dim=-1)
        return self.meta_norm(embedded)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            if len(x) != 3:
                raise ValueError(f"expected [img, temporal, spatial], got a sequence of {len(x)} items")
            img, temporal, spatial = x
        else:
            img = x
            temporal = img.new_zeros(img.shape[0], TEMPORAL_FEATURES)
            spatial = img.new_zeros(img.shape[0], SPATIAL_FEATURES)
        if temporal.shape[0] != img.shape[0] or spatial.shape[0] != img.shape[0]:
            raise ValueError(f"metadata rows ({temporal.shape[0]} temporal, {spatial.shape[0]} spatial) "
                             f"do not match the {img.shape[0]} images")
        logits = self.forward_head(self.forward_features(img))
        return logits + self.meta_head(self.forward_meta(temporal, spatial)).to(logits.dtype)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Fresh image and metadata classifiers for ``num_classes`` (> 0)."""
        if num_classes <= 0:
            raise ValueError("InternImageMetaFormer needs num_classes > 0: it adds image and metadata logits")
        super().reset_classifier(num_classes, global_pool)
        reference = self.meta_head.weight
        self.meta_head = nn.Linear(2 * self.meta_dim, num_classes, device=reference.device,
                                   dtype=reference.dtype)
        self._init_weights(self.meta_head)


def meta_parameter_names(model: nn.Module) -> list[str]:
    """The state_dict keys a plain InternImage checkpoint does not have."""
    return [k for k in model.state_dict() if k.startswith(META_PREFIX)]


def load_pretrained_meta(model: InternImageMetaFormer, checkpoint, *, logger: logging.Logger | None = None,
                         **kwargs) -> LoadReport:
    """``load_pretrained`` for the meta-former: a plain InternImage checkpoint (the published
    recipe fine-tunes from ``internimage_h_jointto22k_384.pth``) is accepted with only the
    ``meta_*`` tensors missing (they keep their fresh initialisation and are reported); a
    meta-former checkpoint loads completely; anything else missing, unexpected or mismatched
    raises."""
    kwargs.pop("strict", None)
    report = load_pretrained(model, checkpoint, strict=False, logger=logger, **kwargs)
    fresh = [k for k in report.missing if k.startswith(META_PREFIX)]
    other = [k for k in report.missing if not k.startswith(META_PREFIX)]
    if other or report.unexpected or report.mismatched:
        raise RuntimeError(f"checkpoint does not match the model (strict apart from meta_*):\n{report}")
    if fresh:
        report.notes.append(f"{len(fresh)} metadata tensors not in the checkpoint, freshly initialised: "
                            + ", ".join(fresh))
        (logger or logging.getLogger(__name__)).info(
            "metadata heads not in the checkpoint, freshly initialised: %s", ", ".join(fresh))
    return report


def is_meta_model(model: nn.Module) -> bool:
    """Whether ``model`` (or the module a DDP/EMA wrapper holds) takes [img, temporal, spatial]."""
    inner = getattr(model, "module", model)
    return bool(getattr(inner, "accepts_meta", False))


__all__ = ["SPATIAL_FEATURES", "TEMPORAL_FEATURES", "InternImageMetaFormer", "MetaEncoder", "encode_spatial",
           "encode_temporal", "is_meta_model", "load_pretrained_meta", "meta_parameter_names"]
