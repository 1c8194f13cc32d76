"""Pretrained-weight loading for InternImage (not training-state checkpoints).

Published checkpoints come in a few wrappings: classification ones as ``{'model': sd}``,
detection/segmentation ones as ``{'state_dict': sd}`` with the trunk under ``backbone.``,
DDP-saved ones with ``module.`` prefixes, and bare state_dicts. ``read_state_dict`` turns
any of them into a flat ``{name: tensor}``; ``load_pretrained`` loads one into a model,
adapting the classifier head (21841 -> 1000 class map or re-initialisation), and reports
what did not match."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.layers import trunc_normal_
from torch import nn

_LOGGER = logging.getLogger(__name__)

# Keys under which trainers and frameworks wrap the weights, tried in this order.
WRAPPER_KEYS = ("model", "module", "state_dict")
# Prefixes added by DDP / torch.compile wrappers; never part of the model's own names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
HEAD_KEYS = ("head.weight", "head.bias")
NUM_CLASSES_22K = 21841
NUM_CLASSES_1K = 1000
_MAX_LISTED = 20  # keys listed per category in a report; the rest are counted


def _is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"a {type(obj).__name__} with {len(keys)} keys [{shown}]"
    return f"an object of type {type(obj).__module__}.{type(obj).__qualname__}"


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat state_dict inside ``obj``: unwraps ``{'model'|'module'|'state_dict': ...}``
    (possibly nested), accepts an ``nn.Module`` or a bare mapping of tensors, and strips
    ``module.`` / ``_orig_mod.`` prefixes. Raises ``ValueError`` saying what was found when
    ``obj`` holds no state_dict."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for _ in range(4):  # wrappers nest at most a few levels ({'state_dict': {'module': ...}})
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} is not a state_dict: found {_describe(obj)}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise ValueError(
            f"{source} is not a state_dict (expected a mapping of names to tensors, possibly wrapped "
            f"as {{'model'|'module'|'state_dict': ...}}): found {_describe(obj)}; non-tensor entries: "
            f"{others[:10]}")
    state_dict = {}
    for key, value in tensors.items():
        name = str(key)
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        state_dict[name] = value
    return state_dict


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "backbone.", *,
                 drop_others: bool = True) -> dict[str, torch.Tensor]:
    """Keys starting with ``prefix`` with it removed (dense checkpoints keep the trunk under
    ``backbone.``). Keys without the prefix are dropped (``drop_others``) or kept as they are.
    When no key has the prefix the state_dict is returned unchanged (a copy), so a plain
    classification checkpoint can initialise a dense model's backbone too."""
    if not any(k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        elif not drop_others:
            out[key] = value
    return out


def read_state_dict(path_or_url: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat state_dict of a checkpoint file or URL (see ``unwrap_state_dict``).

    Loads with ``weights_only=True``; a local file holding other pickled objects is re-read
    with ``weights_only=False`` after a warning (URLs never are: they are not trusted)."""
    source = os.fspath(path_or_url)
    if _is_url(source):
        try:
            obj = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RuntimeError(f"could not load a checkpoint from {source}: "
                               f"{type(error).__name__}: {error}") from error
        return unwrap_state_dict(obj, source)
    path = Path(source).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint file {str(path)!r} {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise RuntimeError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
        # Old trainers pickled extra objects (configs, argparse namespaces) next to the weights.
        warnings.warn(f"{path} holds objects other than tensors; loading it with weights_only=False "
                      "(only do this for files you trust)", stacklevel=2)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error2:
            raise RuntimeError(f"{path} is not a readable PyTorch checkpoint: "
                               f"{type(error2).__name__}: {error2}") from error2
    except Exception as error:  # garbage or truncated files raise KeyError/EOFError/RuntimeError
        raise RuntimeError(f"{path} is not a readable PyTorch checkpoint "
                           f"({type(error).__name__}: {error})") from error
    return unwrap_state_dict(obj, str(path))


def read_class_map(path: str | os.PathLike, num_rows: int = NUM_CLASSES_22K) -> torch.Tensor:
    """The 22K->1K index map: line k holds the 22K head row of 1K class k."""
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    try:
        index = torch.tensor([int(line) for line in lines], dtype=torch.long)
    except ValueError as error:
        raise ValueError(f"{path}: every line must be one integer class index ({error})") from None
    if len(index) != NUM_CLASSES_1K:
        raise ValueError(f"{path}: expected {NUM_CLASSES_1K} lines, found {len(index)}")
    if index.min() < 0 or index.max() >= num_rows:
        raise ValueError(f"{path}: indices must lie in [0, {num_rows}), found "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return f"{title}: none"
    shown = "\n".join(f"    {item}" for item in items[:_MAX_LISTED])
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


@dataclass
class LoadReport:
    """What ``load_pretrained`` did; ``str(report)`` is the readable summary."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # (key, checkpoint shape, model shape) of tensors left out because the shapes differ
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    head: str = "loaded"  # loaded | mapped 21841->1000 | reinitialised | dropped | missing | absent
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model tensor came from the checkpoint and nothing was left over
        (an intentional head re-initialisation or mapping excepted)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}; head: {self.head}"]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(_listing("missing keys (in the model, not in the checkpoint)", self.missing))
        lines.append(_listing("unexpected keys (in the checkpoint, not in the model)", self.unexpected))
        lines.append(_listing("shape mismatches (checkpoint vs model)",
                              [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]))
        return "\n".join(lines)


def reset_head(head: nn.Module | None) -> None:
    """Fresh classifier weights, as at construction: trunc-normal(std .02) weight, zero bias."""
    if isinstance(head, nn.Linear):
        trunc_normal_(head.weight, std=0.02)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def load_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping, *, strict: bool = True,
                    map22kto1k_path: str | os.PathLike | None = None, reinit_head: bool = False,
                    logger: logging.Logger | None = None) -> LoadReport:
    """Loads published (or our own) weights into an InternImage.

    ``checkpoint`` is a path, URL or an already-loaded (possibly wrapped) state_dict. A
    ``backbone.`` trunk (dense checkpoints) is unwrapped when the model has no such keys.
    Classifier head (``head.weight``/``head.bias``): loaded when the shapes match and
    ``reinit_head`` is False; a 21841-row head goes into a 1000-class model through
    ``map22kto1k_path`` (line k = 22K row of 1K class k); otherwise it is re-initialised with
    a warning; a model without a head (num_classes=0) drops it. With ``strict`` any other
    missing, unexpected or shape-mismatched tensor raises a ``RuntimeError`` holding the report.
    """
    log = logger or _LOGGER
    if isinstance(checkpoint, Mapping):
        source = "the given state_dict"
        state_dict = unwrap_state_dict(checkpoint, source)
    else:
        source = os.fspath(checkpoint)
        state_dict = read_state_dict(source)
    report = LoadReport(source=source)
    model_state = model.state_dict()

    if not any(k.startswith("backbone.") for k in model_state) and any(
            k.startswith("backbone.") for k in state_dict):
        state_dict = strip_prefix(state_dict, "backbone.")
        report.notes.append("took the 'backbone.' entries of a detection/segmentation checkpoint")

    # ---- classifier head
    ckpt_head = {k: state_dict.pop(k) for k in HEAD_KEYS if k in state_dict}
    model_head = {k: model_state[k] for k in HEAD_KEYS if k in model_state}
    head_module = getattr(model, "head", None)
    new_head: dict[str, torch.Tensor] = {}
    if not model_head:
        report.head = "dropped" if ckpt_head else "absent"
        if ckpt_head:
            report.notes.append("the model has no classifier (num_classes=0): checkpoint head ignored")
    elif not ckpt_head:
        report.head = "missing"
        report.missing += list(model_head)
    elif reinit_head:
        report.head = "reinitialised"
        reset_head(head_module)
        report.notes.append("head re-initialised as requested (reinit_head=True)")
    elif all(k in ckpt_head and ckpt_head[k].shape == v.shape for k, v in model_head.items()):
        new_head = ckpt_head
    else:
        rows, classes = ckpt_head["head.weight"].shape[0], model_head["head.weight"].shape[0]
        if rows == NUM_CLASSES_22K and classes == NUM_CLASSES_1K and map22kto1k_path:
            index = read_class_map(map22kto1k_path, rows)
            new_head = {k: v[index] for k, v in ckpt_head.items()}
            report.head = f"mapped {rows}->{classes}"
            report.notes.append(f"head rows selected with {os.fspath(map22kto1k_path)}")
        else:
            reset_head(head_module)
            report.head = "reinitialised"
            why = (f"checkpoint head has {rows} classes, the model {classes}"
                   + ("" if rows != NUM_CLASSES_22K or classes != NUM_CLASSES_1K
                      else " (pass map22kto1k_path to keep the 1K classes of a 22K head)"))
            warnings.warn(f"re-initialising the classifier head: {why}", stacklevel=2)
            log.warning("re-initialising the classifier head: %s", why)
            report.notes.append(f"head re-initialised: {why}")
    state_dict.update(new_head)

    # ---- everything else: same names, same shapes
    to_load = {}
    for key, value in state_dict.items():
        if key in model_state and model_state[key].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            to_load[key] = value
    result = model.load_state_dict(to_load, strict=False)
    skipped = {k for k, _, _ in report.mismatched}
    head_done = set(model_head) if report.head == "reinitialised" else set()
    report.missing = sorted(set(report.missing) | {k for k in result.missing_keys
                                                   if k not in skipped and k not in head_done})
    report.unexpected = sorted(result.unexpected_keys)
    unexpected = set(report.unexpected)
    report.loaded = [k for k in to_load if k not in unexpected]

    if strict and not report.ok:
        raise RuntimeError(f"checkpoint does not match the model (strict=True):\n{report}")
    (log.info if report.ok else log.warning)("pretrained weights:\n%s", report)
    return report


__all__ = ["LoadReport", "load_pretrained", "read_class_map", "read_state_dict", "reset_head",
           "strip_prefix", "unwrap_state_dict"]
