"""Which ONNX form DCNv3 takes when a model is exported with the TorchScript exporter.

- ``"plugin"`` (default): one ``mmdeploy::TRTDCNv3`` node per call, the node of the
  published deployment tooling (runs on the TensorRT plugin of ``tensorrt/`` or on the
  onnxruntime custom op of :mod:`ops_dcnv3.onnxruntime`).
- ``"portable"``: the grid_sample reference is traced instead, so the graph holds only
  standard ONNX operators (GridSample needs opset >= 16) and any ONNX runtime runs it.

The setting only matters while tracing (``torch.jit.is_tracing()``); eager calls always
take the compiled kernel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

FORMS = ("plugin", "portable")
PORTABLE_MIN_OPSET = 16  # GridSample entered the default domain at opset 16

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


def portable_tracing() -> bool:
    """True while a trace for export is running with the portable form selected."""
    import torch

    return _current == "portable" and torch.jit.is_tracing()
