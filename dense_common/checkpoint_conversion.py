"""Published DINO / Mask2Former checkpoints load with no separate conversion step.

``install()`` (called once by ``mmdet_custom`` and ``mmseg_custom`` on import) wraps
mmengine's ``_load_checkpoint_to_model``, the one function every mmengine load path ends
in: ``load_from`` / ``--cfg-options load_from=...`` and resuming (``Runner.load_checkpoint``),
``init_cfg=dict(type='Pretrained', ...)`` on a detector or segmentor, mmdet's
``init_detector`` / mmseg's ``init_model`` (test.py, image_demo.py) and mmdeploy's
``build_pytorch_model`` (deploy.py). When the state_dict is in a published layout
(``dense_common.published_keys.detect_layout``) it is renamed to ours and checked against
the model before loading:

- every converted key must name a model parameter/buffer and every model key must be
  present: a key left over (either way) is a ``KeyError`` naming it;
- a shape mismatch is an error too, except for the class-count-dependent tensors
  (DINO ``cls_branches`` / DN ``label_embedding``, Mask2Former ``cls_embed``): a fine-tuning
  start from the 80-class Objects365 detector, say, re-initialises those (logged), as the
  published trees' non-strict loads did.

Files in our own layout (and the published Mask R-CNN / Cascade / UperNet / SegFormer
files, which already are) pass through untouched."""

from __future__ import annotations

import inspect
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dense_common import published_keys

# Tensors whose first dimension is the number of classes: allowed to differ (fine-tuning).
CLASS_DEPENDENT = re.compile(r"^(bbox_head\.cls_branches\.\d+\.(weight|bias)"
                             r"|dn_query_generator\.label_embedding\.weight"
                             r"|decode_head\.cls_embed\.(weight|bias))$")
_installed = False


class PublishedCheckpointError(KeyError):
    """A published-layout checkpoint that does not fit the model; the message names the keys."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _state_dict_of(checkpoint: Any) -> Mapping[str, Any]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        return checkpoint["state_dict"]
    return checkpoint


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own keys; TTA wrappers (``module.``-prefixed, like mmengine's
    BaseTTAModel) are looked through, as mmengine's ``revise_keys`` does for checkpoints."""
    state = model.state_dict()
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def fit_to_model(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                 layout: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state_dict to load, class-dependent keys left out)`` for a converted published
    state_dict. Raises ``PublishedCheckpointError`` naming every key left over, missing or
    of the wrong shape."""
    target = _model_state(model)
    unexpected = sorted(set(state_dict) - set(target))
    missing = sorted(set(target) - set(state_dict))
    problems = []
    if unexpected:
        problems.append(f"keys the model does not have: {_listing(unexpected)}")
    if missing:
        problems.append(f"model keys the checkpoint lacks: {_listing(missing)}")
    reinitialised, mismatched = [], []
    for key in sorted(set(state_dict) & set(target)):
        if tuple(state_dict[key].shape) == tuple(target[key].shape):
            continue
        (reinitialised if CLASS_DEPENDENT.match(key) else mismatched).append(
            f"{key} {tuple(state_dict[key].shape)} vs model {tuple(target[key].shape)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise PublishedCheckpointError(
            f"checkpoint in the {layout} layout, converted to our names, does not fit the model: "
            + "; ".join(problems))
    kept = {k: v for k, v in state_dict.items()
            if tuple(v.shape) == tuple(target[k].shape)}
    return kept, reinitialised


def convert_for_model(checkpoint: Any, model: nn.Module) -> tuple[Any, bool]:
    """``(checkpoint, strict)`` to hand to mmengine: a published-layout checkpoint converted
    and fitted to ``model`` (strict unless class-dependent tensors were left out), anything
    else unchanged with ``strict=None`` (keep the caller's)."""
    state_dict = _state_dict_of(checkpoint)
    if not isinstance(state_dict, Mapping):
        return checkpoint, None
    plain = {re.sub(r"^module\.", "", str(k)): v for k, v in state_dict.items()}
    if set(plain) == set(_model_state(model)):
        # already the model's own names: nothing to convert (a driving model's
        # ``bbox_head.transformer.*`` head would otherwise read as the DINO layout)
        return checkpoint, None
    layout = published_keys.detect_layout(plain)
    if layout == published_keys.CURRENT:
        return checkpoint, None
    converted, _ = published_keys.convert_state_dict(plain)
    kept, reinitialised = fit_to_model(converted, model, layout)
    _log(f"checkpoint in the {layout} layout: {len(plain)} keys converted to the current names"
         + (f"; class-count-dependent tensors re-initialised (shapes differ): {_listing(reinitialised)}"
            if reinitialised else ""))
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = {**checkpoint, "state_dict": kept}
    else:
        checkpoint = kept
    return checkpoint, not reinitialised


def _log(message: str) -> None:
    from mmengine.logging import print_log

    print_log(message, logger="current")


def install() -> None:
    """Wraps mmengine's ``_load_checkpoint_to_model`` (in ``mmengine.runner.checkpoint`` and
    where ``mmengine.runner.runner`` imported it). Idempotent."""
    global _installed
    if _installed:
        return
    from mmengine.runner import checkpoint as checkpoint_module
    from mmengine.runner import runner as runner_module

    original = checkpoint_module._load_checkpoint_to_model
    signature = inspect.signature(original)

    def load_checkpoint_to_model(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        checkpoint, strict = convert_for_model(bound.arguments["checkpoint"], bound.arguments["model"])
        bound.arguments["checkpoint"] = checkpoint
        if strict is not None:
            bound.arguments["strict"] = strict
        return original(*bound.args, **bound.kwargs)

    load_checkpoint_to_model.__wrapped__ = original
    checkpoint_module._load_checkpoint_to_model = load_checkpoint_to_model
    if getattr(runner_module, "_load_checkpoint_to_model", None) is original:
        runner_module._load_checkpoint_to_model = load_checkpoint_to_model
    _installed = True


def read_checkpoint_file(path: str) -> Any:
    """The whole checkpoint object of a file or URL, read by the project's one safe reader
    (``classification.models.checkpoint.read_checkpoint``)."""
    from classification.models.checkpoint import read_checkpoint

    return read_checkpoint(path)


def _primitive(value: Any) -> bool:
    """True for what a weights-only load reads back without an allowlist."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_primitive(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _primitive(v) for k, v in value.items())
    return False


def save_atomically(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then one rename: a reader never
    sees half a file, and an interrupted run leaves no ``path``."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".converting-", suffix=".pth", dir=directory)
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def convert_file(source: str, destination: str, *, expected_layout: str) -> dict[str, Any]:
    """Converts the published checkpoint ``source`` into our layout at ``destination``
    (``{'state_dict': ..., 'meta': ...}``, the meta entries a weights-only load reads kept).
    Raises ``ValueError`` when ``source`` is not in ``expected_layout``."""
    from classification.models.checkpoint import unwrap_state_dict

    checkpoint = read_checkpoint_file(source)
    state_dict = unwrap_state_dict(checkpoint, source)
    layout = published_keys.detect_layout(state_dict)
    if layout != expected_layout:
        found = ("already in the current layout: nothing to convert" if layout == published_keys.CURRENT
                 else f"in the {layout} layout")
        raise ValueError(f"{source} is {found} (this tool converts {expected_layout} checkpoints)")
    converted, _ = published_keys.convert_state_dict(state_dict)
    meta = checkpoint.get("meta") if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping):
        meta = {}
    meta = {k: v for k, v in meta.items() if isinstance(k, str) and _primitive(v)}
    meta["converted_from"] = layout
    out = {"state_dict": converted, "meta": meta}
    save_atomically(out, destination)
    return out


def tool_main(argv: list[str] | None, *, expected_layout: str, prog: str) -> int:
    """``convert_checkpoint.py IN OUT`` of the detection and segmentation trees."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description=f"Convert a {expected_layout} checkpoint to the mmdet 3 / mmseg 1 names "
                               "(loading one directly converts it too; this writes the converted file).")
    parser.add_argument("src", help="published checkpoint (file or URL)")
    parser.add_argument("dst", help="converted checkpoint to write")
    from classification.models.checkpoint import parse_args_with_trust

    args = parse_args_with_trust(parser, argv)  # adds --trust-checkpoint
    try:
        out = convert_file(args.src, args.dst, expected_layout=expected_layout)
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{args.src}: {len(out['state_dict'])} tensors in the current layout -> {args.dst}")
    return 0
