"""Run-time fixes that let the OpenMMLab 2.0 stack (mmengine 0.10.7, mmdet 3.3,
mmseg 1.2, mmdeploy 1.3.1) run on torch 2.14 — in one place, each measured in
../shared/spec/stack.md. ``apply()`` is idempotent; mmdet_custom and mmseg_custom call
it on import, the deploy scripts call ``apply(onnx=True)``.

1. Checkpoints. torch >= 2.6 loads with ``weights_only=True``, and mmengine's own
   training-state files (resume) pickle ``HistoryBuffer`` objects and numpy arrays.
   Instead of switching the safety off for every file (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``),
   mmengine's local-file loader is replaced by one that still loads with
   ``weights_only=True`` but allows exactly the types mmengine writes
   (``_training_state_globals``). A file needing anything else fails with a message naming
   the types; ``INTERNIMAGE_TRUST_CHECKPOINTS=1`` opts into a full unpickle for files you
   trust.
2. ONNX (``onnx=True``). torch 2.14's ``torch.onnx.export`` defaults to the dynamo
   exporter, which ignores ``autograd.Function.symbolic`` and mmdeploy's rewriters: the
   default becomes ``dynamo=False`` (an explicit argument still wins). mmdeploy 1.3.1
   imports ``torch.onnx.symbolic_opset9._cast_Long``, removed from torch: it is restored
   as a Cast to INT64. mmdeploy exports every ``grid_sample`` as its own
   ``mmdeploy::grid_sampler`` node (written before ONNX had GridSample), which plain
   onnxruntime cannot run: from opset 16 on, the standard ``GridSample`` is emitted
   instead (below 16 mmdeploy's node stays, for its TensorRT/onnxruntime op libraries).
"""

from __future__ import annotations

import functools
import os
import os.path as osp
import pickle
from typing import Any

import torch

TRUST_ENV = "INTERNIMAGE_TRUST_CHECKPOINTS"
_applied: set[str] = set()


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` during a weights-only load. HistoryBuffer's
    ``__getstate__`` stores its statistics methods, which pickle as
    ``getattr(HistoryBuffer, 'min')`` etc.; rather than allowing getattr on anything a file
    names, only public methods of HistoryBuffer are handed out."""
    from mmengine.logging.history_buffer import HistoryBuffer

    method = getattr(owner, name, None) if owner is HistoryBuffer and not name.startswith("_") else None
    if not callable(method):
        raise pickle.UnpicklingError(f"weights-only load: refusing getattr({owner!r}, {name!r})")
    return method


def _training_state_globals() -> list[Any]:
    """Types that mmengine 0.10 checkpoints (message hub, dataset meta) pickle besides
    tensors."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in
                     ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")]
    helpers: list[Any] = [_reconstruct, scalar]
    if _reconstruct.__module__ != "numpy.core.multiarray":  # files written under numpy 1.x name them so
        helpers += [(fn, f"numpy.core.multiarray.{fn.__name__}") for fn in (_reconstruct, scalar)]
    return [HistoryBuffer, (_history_buffer_method, "builtins.getattr"), np.ndarray, np.dtype, *helpers,
            *dtype_classes]


def torch_load(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` for mmengine checkpoints: weights-only with the training-state
    allowlist; a clear error (or, with INTERNIMAGE_TRUST_CHECKPOINTS=1, a full load)
    when a file needs other types."""
    try:
        with torch.serialization.safe_globals(_training_state_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if os.environ.get(TRUST_ENV) == "1":
            return torch.load(filename, map_location=map_location, weights_only=False)
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
        except Exception:  # noqa: BLE001 - only used to improve the message
            needed = []
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
                   for g in _training_state_globals()}
        extra = [g for g in needed if g not in allowed]
        raise pickle.UnpicklingError(
            f"{filename} holds pickled objects that a weights-only load refuses: {extra or error}. "
            f"If you trust this file, set {TRUST_ENV}=1 to load it with weights_only=False.") from error


def _patch_mmengine_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes="", force=True)
    def load_from_local(filename: str, map_location: Any = None) -> Any:
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"checkpoint file {filename!r} does not exist")
        return torch_load(filename, map_location=map_location)


def _cast_long(g, input, non_blocking):  # noqa: A002 - torch's symbolic signature
    """torch < 2.9's ``symbolic_opset9._cast_Long``, called as ``_cast_Long(g, x, False)`` by
    mmdeploy's RoIAlign symbolic (batch indices for ONNX RoiAlign)."""
    return g.op("Cast", input, to_i=torch.onnx.TensorProtoDataType.INT64)


def _patch_onnx() -> None:
    import importlib

    # torch 2.14 has two modules of that name: the exporter's own
    # (torch.onnx._internal.torchscript_exporter.symbolic_opset9, what `from torch.onnx import
    # symbolic_opset9` returns until the other is imported) and the backward-compatibility
    # file torch/onnx/symbolic_opset9.py that `from torch.onnx.symbolic_opset9 import ...`
    # (mmdeploy) loads. Both get the function.
    for name in ("torch.onnx._internal.torchscript_exporter.symbolic_opset9", "torch.onnx.symbolic_opset9"):
        module = importlib.import_module(name)
        if not hasattr(module, "_cast_Long"):
            module._cast_Long = _cast_long
    export = torch.onnx.export
    if getattr(export, "_internimage_default_torchscript", False):
        return

    @functools.wraps(export)
    def export_torchscript_by_default(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        # looked up at call time (functools.wraps sets it) so tests can observe the call
        return export_torchscript_by_default.__wrapped__(*args, **kwargs)

    export_torchscript_by_default._internimage_default_torchscript = True
    torch.onnx.export = export_torchscript_by_default
    _patch_mmdeploy_grid_sampler()


def _grid_sampler_standard_from_16(mmdeploy_symbolic):
    """mmdeploy's grid_sampler symbolic, but the standard GridSample from opset 16 on."""

    def grid_sampler(g, input, grid, interpolation_mode, padding_mode, align_corners=False):  # noqa: A002
        if g.opset >= 16:
            from torch.onnx import symbolic_opset16

            standard = symbolic_opset16.grid_sampler
            return standard(g, input, grid, interpolation_mode, padding_mode, align_corners)
        return mmdeploy_symbolic(g, input, grid, interpolation_mode, padding_mode, align_corners)

    grid_sampler._internimage_standard_from_16 = True
    return grid_sampler


def _patch_mmdeploy_grid_sampler() -> None:
    try:
        from mmdeploy.pytorch.symbolics import grid_sampler as module
    except ImportError:  # no mmdeploy: torch's own symbolic (GridSample, opset >= 16) applies
        return
    # mmdeploy's registered symbolic (grid_sampler__default) calls this module-level function
    # for every backend but PPLNN.
    if not getattr(module.grid_sampler, "_internimage_standard_from_16", False):
        module.grid_sampler = _grid_sampler_standard_from_16(module.grid_sampler)


def apply(*, onnx: bool = False) -> None:
    """Installs the fixes (once per process)."""
    if "checkpoint" not in _applied:
        _patch_mmengine_loader()
        _applied.add("checkpoint")
    if onnx and "onnx" not in _applied:
        _patch_onnx()
        _applied.add("onnx")
