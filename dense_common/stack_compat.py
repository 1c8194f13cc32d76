"""Run-time fixes that let the OpenMMLab 2.0 stack (mmengine 0.10.7, mmdet 3.3,
mmseg 1.2, mmdeploy 1.3.1) run on torch 2.14 — in one place, each measured in
../shared/spec/stack.md. ``apply()`` is idempotent; mmdet_custom and mmseg_custom call
it on import, the deploy scripts call ``apply(onnx=True)``.

1. Checkpoints. mmengine's local-file and http(s) loaders are replaced by
   ``classification.models.checkpoint.read_checkpoint``, the repository's one checkpoint
   reader: weights-only with an allowlist that covers what mmengine writes (numpy arrays,
   ``HistoryBuffer``); a file needing anything else fails with a message naming the types;
   ``INTERNIMAGE_TRUST_CHECKPOINTS=1`` opts into a full unpickle for files you trust.
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
import os.path as osp
from typing import Any

import torch

TRUST_ENV = "INTERNIMAGE_TRUST_CHECKPOINTS"  # the same as classification.models.checkpoint.TRUST_ENV
_applied: set[str] = set()


def torch_load(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` for mmengine checkpoints: ``classification.models.checkpoint.read_checkpoint``
    (weights-only with the repository's allowlist, which covers mmengine's training state;
    a clear error, or with INTERNIMAGE_TRUST_CHECKPOINTS=1 a full load, for anything else)."""
    from classification.models.checkpoint import read_checkpoint

    return read_checkpoint(filename, map_location=map_location)


def _patch_mmengine_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes="", force=True)
    def load_from_local(filename: str, map_location: Any = None) -> Any:
        return torch_load(osp.expanduser(filename), map_location=map_location)

    # load_from='https://...' in a config: downloaded to the torch.hub cache, then the same rules
    @CheckpointLoader.register_scheme(prefixes=("http://", "https://"), force=True)
    def load_from_http(filename: str, map_location: Any = None, model_dir: str | None = None,
                       progress: bool = False) -> Any:
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


def use_ops_dcnv3_msda() -> None:
    """mmcv's ``MultiScaleDeformableAttention`` (DINO, Mask2Former, the BEVFormer attentions) and
    the functions it calls run on ops_dcnv3's MSDA kernels: on CPU, and on CUDA where mmcv's
    extension has none (ops_dcnv3/mmcv_msda.py). Parameter names are untouched."""
    from ops_dcnv3 import mmcv_msda

    mmcv_msda.install()


def apply(*, onnx: bool = False) -> None:
    """Installs the fixes (once per process)."""
    if "checkpoint" not in _applied:
        _patch_mmengine_loader()
        _applied.add("checkpoint")
    if onnx and "onnx" not in _applied:
        _patch_onnx()
        _applied.add("onnx")
    if "msda" not in _applied:
        use_ops_dcnv3_msda()
        _applied.add("msda")
