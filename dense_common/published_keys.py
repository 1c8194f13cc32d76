"""Parameter names of the published DINO (mmdet 2 tree) and Mask2Former (mmseg 0.x tree)
checkpoints, and the mmdet 3.3 / mmseg 1.2 names our models use (dense_fidelity.md).

Name level (for one key, both directions):

- ``to_current(published_key)`` / ``to_published(current_key, cb=False)``: any model key;
  DINO and Mask2Former keys are rewritten, everything else (backbones, necks, Mask R-CNN,
  UperNet, ...) comes back unchanged. ``cb=True``: the CB-DINO configs, whose published
  neck was a one-element list (``neck.0.*``).
- the same per model: ``dino_to_mmdet3`` / ``dino_to_published`` and
  ``mask2former_to_mmseg1`` / ``mask2former_to_published`` (aliases ``to_mmdet3`` and
  ``to_mmseg1``).

State-dict level: ``detect_layout``, ``convert_state_dict`` (published -> ours, with the
G config's split ``EfficientFFN`` fused into the plain FFN) and ``to_published_state_dict``
(ours -> published, ``ffn_split`` splitting the FFNs again).

The G config's ``EfficientFFN(split=s)`` stores ``fc1_{k}`` (``feedforward/s`` rows each),
``fc2_{k}.weight`` (no bias) and one ``fc2_bias``; it computes
``sum_k fc2_k(act(fc1_k(x))) + fc2_bias``, which is the plain FFN with the fc1 weights and
biases concatenated along dim 0 and the fc2 weights along dim 1."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

PUBLISHED_DINO = "published_dino"
PUBLISHED_MASK2FORMER = "published_mask2former"
CURRENT = "current"
LAYOUTS = (PUBLISHED_DINO, PUBLISHED_MASK2FORMER, CURRENT)

_T = "bbox_head.transformer."
# (published prefix, current prefix); "{i}" stands for a layer number. Order matters only
# where one prefix extends another (enc_output_norm before enc_output).
_DINO_PREFIXES: tuple[tuple[str, str], ...] = (
    (_T + "encoder.layers.{i}.attentions.0.", "encoder.layers.{i}.self_attn."),
    (_T + "encoder.layers.{i}.ffns.0.", "encoder.layers.{i}.ffn."),
    (_T + "encoder.layers.{i}.norms.", "encoder.layers.{i}.norms."),
    (_T + "decoder.layers.{i}.attentions.0.", "decoder.layers.{i}.self_attn."),
    (_T + "decoder.layers.{i}.attentions.1.", "decoder.layers.{i}.cross_attn."),
    (_T + "decoder.layers.{i}.ffns.0.", "decoder.layers.{i}.ffn."),
    (_T + "decoder.layers.{i}.norms.", "decoder.layers.{i}.norms."),
    (_T + "decoder.ref_point_head.0.", "decoder.ref_point_head.layers.0."),
    (_T + "decoder.ref_point_head.2.", "decoder.ref_point_head.layers.1."),
    (_T + "decoder.norm.", "decoder.norm."),
    (_T + "enc_output_norm.", "memory_trans_norm."),
    (_T + "enc_output.", "memory_trans_fc."),
    (_T + "query_embed.", "query_embedding."),
    ("bbox_head.label_embedding.", "dn_query_generator.label_embedding."),
)
# whole names (no suffix)
_DINO_NAMES: tuple[tuple[str, str], ...] = ((_T + "level_embeds", "level_embed"),)

_D = "decode_head."
_MASK2FORMER_PREFIXES: tuple[tuple[str, str], ...] = (
    (_D + "pixel_decoder.encoder.layers.{i}.attentions.0.",
     _D + "pixel_decoder.encoder.layers.{i}.self_attn."),
    (_D + "pixel_decoder.encoder.layers.{i}.ffns.0.", _D + "pixel_decoder.encoder.layers.{i}.ffn."),
    # the published decoder layer runs cross_attn, norm, self_attn, norm, ffn, norm
    (_D + "transformer_decoder.layers.{i}.attentions.0.", _D + "transformer_decoder.layers.{i}.cross_attn."),
    (_D + "transformer_decoder.layers.{i}.attentions.1.", _D + "transformer_decoder.layers.{i}.self_attn."),
    (_D + "transformer_decoder.layers.{i}.ffns.0.", _D + "transformer_decoder.layers.{i}.ffn."),
)

_CB_NECK_PUBLISHED = "neck.0."
_CB_NECK_CURRENT = "neck."


def _compile(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def _rules(pairs: Iterable[tuple[str, str]], reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    return [(_compile(b if reverse else a), a if reverse else b) for a, b in pairs]


_DINO_FORWARD = _rules(_DINO_PREFIXES, reverse=False)
_DINO_BACKWARD = _rules(_DINO_PREFIXES, reverse=True)
_M2F_FORWARD = _rules(_MASK2FORMER_PREFIXES, reverse=False)
_M2F_BACKWARD = _rules(_MASK2FORMER_PREFIXES, reverse=True)


def _rewrite(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            head = template.replace("{i}", match.group("i")) if "{i}" in template else template
            return head + key[match.end():]
    return None


def dino_to_mmdet3(key: str) -> str:
    """The mmdet 3.3 DINO name of a published (mmdet 2) DINO key; the CB neck's
    ``neck.0.*`` becomes ``neck.*``. Keys outside the map come back unchanged."""
    for published, current in _DINO_NAMES:
        if key == published:
            return current
    if key.startswith(_CB_NECK_PUBLISHED):
        return _CB_NECK_CURRENT + key[len(_CB_NECK_PUBLISHED):]
    rewritten = _rewrite(key, _DINO_FORWARD)
    return key if rewritten is None else rewritten


def dino_to_published(key: str, *, cb: bool = False) -> str:
    """The published (mmdet 2) name of an mmdet 3.3 DINO key; ``cb=True`` for the CB-DINO
    configs (published neck ``neck.0.*``)."""
    for published, current in _DINO_NAMES:
        if key == current:
            return published
    if cb and key.startswith(_CB_NECK_CURRENT):
        return _CB_NECK_PUBLISHED + key[len(_CB_NECK_CURRENT):]
    rewritten = _rewrite(key, _DINO_BACKWARD)
    return key if rewritten is None else rewritten


def mask2former_to_mmseg1(key: str) -> str:
    """The mmseg 1.2 ``Mask2FormerHead`` name of a published (mmseg 0.x) key."""
    rewritten = _rewrite(key, _M2F_FORWARD)
    return key if rewritten is None else rewritten


def mask2former_to_published(key: str) -> str:
    """The published (mmseg 0.x) name of an mmseg 1.2 Mask2Former key."""
    rewritten = _rewrite(key, _M2F_BACKWARD)
    return key if rewritten is None else rewritten


to_mmdet3 = dino_to_mmdet3
to_mmseg1 = mask2former_to_mmseg1


def to_current(published_key: str) -> str:
    """Our (mmdet 3.3 / mmseg 1.2) name of any published key: DINO and Mask2Former keys
    are rewritten (their prefixes do not overlap), all others come back unchanged."""
    if published_key.startswith(_D):
        return mask2former_to_mmseg1(published_key)
    return dino_to_mmdet3(published_key)


def to_published(current_key: str, *, cb: bool = False) -> str:
    """The published name of any of our model keys (inverse of ``to_current``); ``cb=True``
    for CB-DINO models. An ``EfficientFFN`` parameter gets its plain-FFN published name
    (``...ffns.0.layers.0.0.weight``): same layer, same decay rules as its split parts."""
    if current_key.startswith(_D):
        return mask2former_to_published(current_key)
    return dino_to_published(current_key, cb=cb)


# ---------------------------------------------------------------------------- state dicts

def _is_published_mask2former_key(key: str) -> bool:
    return _rewrite(key, _M2F_FORWARD) is not None


def detect_layout(keys: Iterable[str]) -> str:
    """``PUBLISHED_DINO`` (keys under ``bbox_head.transformer`` or the DN label
    embedding on the head), ``PUBLISHED_MASK2FORMER`` (``attentions.N`` / ``ffns.0`` in the
    pixel decoder or transformer decoder layers), else ``CURRENT`` (our own files, and
    every published Mask R-CNN / Cascade / UperNet / SegFormer file)."""
    keys = list(keys)
    if any(k.startswith(_T) or k.startswith("bbox_head.label_embedding.") for k in keys):
        return PUBLISHED_DINO
    if any(_is_published_mask2former_key(k) for k in keys):
        return PUBLISHED_MASK2FORMER
    return CURRENT


_SPLIT_FFN_PART = re.compile(r"^(?P<ffn>.+\.ffn)\.(?:fc1_(?P<fc1>\d+)\.(?P<fc1_kind>weight|bias)"
                             r"|fc2_(?P<fc2>\d+)\.weight|(?P<bias>fc2_bias))$")


def fuse_efficient_ffn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replaces every split ``EfficientFFN`` (``X.ffn.fc1_{k}.*``, ``X.ffn.fc2_{k}.weight``,
    ``X.ffn.fc2_bias``) by the plain FFN's ``X.ffn.layers.0.0.*`` and ``X.ffn.layers.1.*``.
    Raises ``ValueError`` naming the FFN when its parts are incomplete."""
    groups: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _SPLIT_FFN_PART.match(key)
        if match is None:
            out[key] = value
            continue
        parts = groups.setdefault(match.group("ffn"), {"fc1.weight": {}, "fc1.bias": {}, "fc2.weight": {},
                                                       "fc2.bias": {}})
        if match.group("fc1") is not None:
            parts[f"fc1.{match.group('fc1_kind')}"][int(match.group("fc1"))] = value
        elif match.group("fc2") is not None:
            parts["fc2.weight"][int(match.group("fc2"))] = value
        else:
            parts["fc2.bias"][0] = value
    for ffn, parts in groups.items():
        splits = sorted(parts["fc1.weight"])
        complete = (splits == list(range(len(splits))) and len(splits) > 0
                    and sorted(parts["fc1.bias"]) == splits and sorted(parts["fc2.weight"]) == splits
                    and list(parts["fc2.bias"]) == [0])
        if not complete:
            raise ValueError(f"split FFN {ffn!r} is incomplete: fc1_k.weight for "
                             f"k={sorted(parts['fc1.weight'])}, "
                             f"fc1_k.bias for k={sorted(parts['fc1.bias'])}, fc2_k.weight for "
                             f"k={sorted(parts['fc2.weight'])}, "
                             f"fc2_bias {'present' if parts['fc2.bias'] else 'missing'}")
        out[f"{ffn}.layers.0.0.weight"] = torch.cat([parts["fc1.weight"][k] for k in splits], dim=0)
        out[f"{ffn}.layers.0.0.bias"] = torch.cat([parts["fc1.bias"][k] for k in splits], dim=0)
        out[f"{ffn}.layers.1.weight"] = torch.cat([parts["fc2.weight"][k] for k in splits], dim=1)
        out[f"{ffn}.layers.1.bias"] = parts["fc2.bias"][0]
    return out


_PLAIN_FFN_PART = re.compile(r"^(?P<ffn>.+\.ffn)\.layers\."
                             r"(?P<part>0\.0\.weight|0\.0\.bias|1\.weight|1\.bias)$")


def split_efficient_ffn(state_dict: Mapping[str, torch.Tensor], split: int) -> dict[str, torch.Tensor]:
    """Inverse of ``fuse_efficient_ffn``: every plain FFN (``X.ffn.layers.*``) becomes
    ``split`` parts. Raises ``ValueError`` when the hidden width does not divide."""
    if split < 1:
        raise ValueError(f"split must be >= 1, got {split}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _PLAIN_FFN_PART.match(key)
        if match is None:
            out[key] = value
            continue
        ffn, part = match.group("ffn"), match.group("part")
        if part == "1.bias":
            out[f"{ffn}.fc2_bias"] = value
            continue
        dim = 1 if part == "1.weight" else 0
        if value.shape[dim] % split:
            raise ValueError(f"{key}: hidden width {value.shape[dim]} does not split into {split} parts")
        name = {"0.0.weight": "fc1_{k}.weight", "0.0.bias": "fc1_{k}.bias",
                "1.weight": "fc2_{k}.weight"}[part]
        for k, chunk in enumerate(torch.chunk(value, split, dim=dim)):
            out[f"{ffn}.{name.format(k=k)}"] = chunk.clone() if chunk.device.type != "meta" else chunk
    return out


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """``(state_dict in our names, detected layout)``. Published DINO / Mask2Former keys
    are renamed (split FFNs fused); a ``CURRENT`` state_dict comes back as it is."""
    layout = detect_layout(state_dict)
    if layout == CURRENT:
        return dict(state_dict), layout
    rename = dino_to_mmdet3 if layout == PUBLISHED_DINO else mask2former_to_mmseg1
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = rename(key)
        if new in renamed:
            raise ValueError(f"published keys map onto the same name {new!r} (one of them {key!r}); "
                             "the file mixes the published and the current layout")
        renamed[new] = value
    return fuse_efficient_ffn(renamed), layout


def to_published_state_dict(state_dict: Mapping[str, torch.Tensor], *, model: str, cb: bool = False,
                            ffn_split: int | None = None) -> dict[str, torch.Tensor]:
    """Our state_dict in the published layout (``model`` ``'dino'`` or ``'mask2former'``):
    what the published trees saved. ``ffn_split`` splits every FFN as the G config's
    ``EfficientFFN`` stores it."""
    if model not in ("dino", "mask2former"):
        raise ValueError(f"model must be 'dino' or 'mask2former', got {model!r}")
    if ffn_split is not None:
        state_dict = split_efficient_ffn(state_dict, ffn_split)
    if model == "dino":
        return {dino_to_published(k, cb=cb): v for k, v in state_dict.items()}
    return {mask2former_to_published(k): v for k, v in state_dict.items()}


__all__ = ["CURRENT", "LAYOUTS", "PUBLISHED_DINO", "PUBLISHED_MASK2FORMER", "convert_state_dict",
           "detect_layout",
           "dino_to_mmdet3", "dino_to_published", "fuse_efficient_ffn", "mask2former_to_mmseg1",
           "mask2former_to_published", "split_efficient_ffn", "to_current", "to_mmdet3", "to_mmseg1",
           "to_published",
           "to_published_state_dict"]
