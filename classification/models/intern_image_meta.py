"""InternImage with image metadata (the "meta-former" variant used for iNaturalist 2018).

Each image may carry where and when it was taken. ``encode_meta`` turns that into a fixed
vector of ``META_FEATURES`` = 7 floats::

    [sin(lat'), cos(lat'), sin(lon'), cos(lon'), sin(day'), cos(day'), valid]

with lat' = lat / 90 * pi / 2, lon' = lon / 180 * pi and day' = 2 pi (day_of_year - 1) /
days_in_year. A missing part (no location, no date) is left as zeros -- a point off the
unit circle, so the model can tell it from a real value -- and ``valid`` is 1 when any part
is present, 0 when the image has no metadata at all.

``InternImageMeta`` embeds that vector with a small MLP (``meta_embed``: Linear(7, H), GELU,
Linear(H, D), LayerNorm(D)) and fuses it with the image:

- with the CLIP-projector head (H, G) D is the token width of the attention pooling (1024)
  and the embedding joins the token sequence as one extra token, so the pooled feature can
  attend to it;
- otherwise D is the pooled feature width and the embedding is added to the pooled feature.

Rows whose ``valid`` flag is 0 get exactly the image-only result, and ``forward(x)`` without
metadata is ``InternImage.forward(x)``, so a plain InternImage checkpoint loads into this
model with only the ``meta_embed.*`` tensors missing (see ``load_pretrained_meta``)."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re

import torch
from torch import nn

from .checkpoint import LoadReport, load_pretrained
from .intern_image import InternImage

META_FEATURES = 7
META_PREFIX = "meta_"
_DATE = re.compile(r"^\s*(\d{4})[-/](\d{1,2})[-/](\d{1,2})")


def _number(value) -> float | None:
    """``value`` as a finite float, or None (missing, empty, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def day_of_year(date) -> tuple[int, int] | None:
    """(day of year starting at 1, days in that year) of a ``datetime.date``/``datetime`` or a
    string starting with ``YYYY-MM-DD`` (iNaturalist writes e.g. "2017-07-04 10:31:00+00:00");
    None when missing or unparsable."""
    if isinstance(date, _dt.datetime):
        date = date.date()
    if not isinstance(date, _dt.date):
        match = _DATE.match(date) if isinstance(date, str) else None
        if match is None:
            return None
        try:
            date = _dt.date(*(int(g) for g in match.groups()))
        except ValueError:  # e.g. 2017-02-30
            return None
    days = 366 if date.year % 4 == 0 and (date.year % 100 != 0 or date.year % 400 == 0) else 365
    return date.timetuple().tm_yday, days


def encode_meta(lat, lon, date=None) -> torch.Tensor:
    """The (7,) float32 metadata vector of one image (see the module docstring). Latitude
    outside [-90, 90], a non-numeric coordinate or only one of the two coordinates count as
    no location; an unparsable date counts as no date."""
    out = torch.zeros(META_FEATURES)
    lat, lon = _number(lat), _number(lon)
    has_location = lat is not None and lon is not None and -90.0 <= lat <= 90.0
    if has_location:
        a, b = lat / 90.0 * math.pi / 2, lon / 180.0 * math.pi
        out[0:4] = torch.tensor([math.sin(a), math.cos(a), math.sin(b), math.cos(b)])
    day = day_of_year(date)
    if day is not None:
        angle = 2 * math.pi * (day[0] - 1) / day[1]
        out[4:6] = torch.tensor([math.sin(angle), math.cos(angle)])
    out[6] = 1.0 if has_location or day is not None else 0.0
    return out


class InternImageMeta(InternImage):
    """InternImage whose classifier also sees per-image metadata (``encode_meta`` vectors).

    ``meta_hidden_dim``: hidden width of the metadata MLP (None or 0: the embedding width D).
    All other arguments are InternImage's."""

    accepts_meta = True  # the trainer passes (images, meta) to models with this flag

    def __init__(self, *args, meta_hidden_dim: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_clip_projector:
            dim = self.dcnv3_head_x3.out_channels  # token width of the attention pooling
        else:
            dim = self.conv_head[0].out_channels  # pooled feature width
        hidden = meta_hidden_dim or dim
        if hidden < 1:
            raise ValueError(f"meta_hidden_dim must be >= 1 (or 0 / None to derive), got {meta_hidden_dim}")
        self.meta_dim = dim
        self.meta_embed = nn.Sequential(
            nn.Linear(META_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.meta_embed.apply(self._init_weights)

    def embed_meta(self, meta: torch.Tensor) -> torch.Tensor:
        """(N, 7) metadata -> (N, D) embedding."""
        if meta.ndim != 2 or meta.shape[1] != META_FEATURES:
            raise ValueError(f"meta must be (N, {META_FEATURES}), got {tuple(meta.shape)}")
        return self.meta_embed(meta.to(self.meta_embed[0].weight.dtype))

    def _clip_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, L, 1024) token sequence the CLIP projector pools."""
        features = self.forward_multiscale(x)
        merged = self.dcnv3_head_x4(features[3]) + self.dcnv3_head_x3(features[2])
        return merged.flatten(-2).transpose(1, 2)

    def forward_features(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        if meta is None:
            return super().forward_features(x)
        if meta.shape[0] != x.shape[0]:
            raise ValueError(f"meta has {meta.shape[0]} rows for a batch of {x.shape[0]} images")
        valid = meta[:, -1:] > 0
        embedding = self.embed_meta(meta)
        if not self.use_clip_projector:
            pooled = super().forward_features(x)
            return pooled + embedding.to(pooled.dtype) * valid.to(pooled.dtype)
        tokens = self._clip_tokens(x)
        with_meta = torch.cat([tokens, embedding.to(tokens.dtype).unsqueeze(1)], dim=1)
        pooled = self.fc_norm(self.clip_projector(with_meta))
        if bool(valid.all()):
            return pooled
        image_only = self.fc_norm(self.clip_projector(tokens))  # rows without metadata
        return torch.where(valid, pooled, image_only.to(pooled.dtype))

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, meta))


def meta_parameter_names(model: nn.Module) -> list[str]:
    """The state_dict keys a plain InternImage checkpoint does not have."""
    return [k for k in model.state_dict() if k.startswith(META_PREFIX)]


def load_pretrained_meta(model: InternImageMeta, checkpoint, *, logger: logging.Logger | None = None,
                         **kwargs) -> LoadReport:
    """``load_pretrained`` for an InternImageMeta: a plain InternImage checkpoint is accepted
    with only the ``meta_*`` tensors missing (they keep their fresh initialisation and are
    reported); anything else missing, unexpected or mismatched still raises."""
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
            "metadata embedding not in the checkpoint, freshly initialised: %s", ", ".join(fresh))
    return report


def is_meta_model(model: nn.Module) -> bool:
    """Whether ``model`` (or the module a DDP/EMA wrapper holds) takes a metadata argument."""
    inner = getattr(model, "module", model)
    return isinstance(inner, InternImageMeta) or bool(getattr(inner, "accepts_meta", False))


__all__ = ["META_FEATURES", "InternImageMeta", "day_of_year", "encode_meta", "is_meta_model",
           "load_pretrained_meta", "meta_parameter_names"]

