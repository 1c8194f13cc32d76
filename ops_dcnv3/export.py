"""Which ONNX form DCNv3 takes when a model is exported with the TorchScript exporter.

- ``"plugin"`` (default): one ``mmdeploy::TRTDCNv3`` node per call, the node of the
  published deployment tooling (runs on the TensorRT plugin of ``tensorrt/`` or on the
  onnxruntime custom op of :mod:`ops_dcnv3.onnxruntime`).
- ``"portable"``: standard ONNX operators only, so any ONNX runtime runs the file. At
  opset >= 19 DCNv3 becomes one ``DeformConv`` (depthwise, unit weights) between layout
  transposes (:mod:`ops_dcnv3.onnx_deform`); at opsets 16-18 the grid_sample reference
  is traced instead (``GridSample``: slower in onnxruntime, for runtimes without
  DeformConv). Multi-scale deformable attention always traces its grid_sample reference.

The setting only matters while tracing (``torch.jit.is_tracing()``); eager calls always
take the compiled kernel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

FORMS = ("plugin", "portable")
PORTABLE_MIN_OPSET = 16  # GridSample entered the default domain at opset 16
DEFORM_CONV_MIN_OPSET = 19  # DeformConv, the faster portable DCNv3 (onnx_deform.py)

_current = "plugin"


def get_export_form() -> str:
    return _current


def set_export_form(form: str) -> None:
    global _current
    if form not in FORMS:
        raise ValueError(f"export form must be one of {FORMS}, got {form!r}")
    _current = form


@contextlib.contextmanager
def export_form(form: str) -> Iterator[None]:
    """Sets the export form for the duration of a ``with`` block (restored on exit)."""
    previous = _current
    set_export_form(form)
    try:
        yield
    finally:
        set_export_form(previous)


def exporting_opset() -> int | None:
    """The opset of the running TorchScript ONNX export, None where it cannot be read."""
    try:  # the exporter keeps it in a private global; guarded against it moving
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return None
    return int(GLOBALS.export_onnx_opset_version)


def portable_tracing() -> bool:
    """True while a trace for export is running with the portable form selected."""
    import torch

    return _current == "portable" and torch.jit.is_tracing()


def portable_deform_conv() -> bool:
    """True while a portable-form trace runs at an opset with DeformConv: DCNv3 then
    exports through its symbolic as DeformConv rather than as the traced reference. An
    opset that cannot be read counts as too old (the GridSample form is always valid)."""
    opset = exporting_opset() if portable_tracing() else None
    return opset is not None and opset >= DEFORM_CONV_MIN_OPSET
