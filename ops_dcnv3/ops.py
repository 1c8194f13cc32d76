"""The compiled DCNv3 operator: loading, fake kernels, autograd, ONNX symbolic, and the
thin dispatching wrapper ``dcnv3``.

The schema ``ops_dcnv3::dcnv3`` is declared once in C++ (csrc/dcnv3.cpp) with CPU and
CUDA kernels; everything that makes it a first-class PyTorch op lives here."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .export import DEFORM_CONV_MIN_OPSET, portable_deform_conv, portable_tracing
from .reference import dcnv3_core_pytorch
from .validation import check_dcnv3_args, output_size

try:
    from . import _C  # noqa: F401  (registers ops_dcnv3::dcnv3 and its kernels)

    EXTENSION_ERROR: str | None = None
except ImportError as error:  # importing never fails: the reference takes over
    EXTENSION_ERROR = f"{type(error).__name__}: {error}"


def _kernel_devices() -> frozenset[str]:
    if EXTENSION_ERROR is not None:
        return frozenset()
    return frozenset(
        device for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
        if torch._C._dispatch_has_kernel_for_dispatch_key("ops_dcnv3::dcnv3", key)
    )


# Device types with a compiled kernel, fixed at import (a plain set lookup keeps the
# dispatch traceable by torch.compile).
KERNEL_DEVICES = _kernel_devices()
_warned_devices: set[str] = set()


def extension_available() -> bool:
    return EXTENSION_ERROR is None


def kernel_available(device: torch.device | str) -> bool:
    return torch.device(device).type in KERNEL_DEVICES


def _warn_fallback(device_type: str) -> None:
    if device_type in _warned_devices:
        return
    _warned_devices.add(device_type)
    reason = (f"the compiled extension did not load ({EXTENSION_ERROR})" if EXTENSION_ERROR
              else f"the compiled extension has no {device_type} kernel")
    warnings.warn(
        f"ops_dcnv3: {reason}; using the pure-PyTorch reference on {device_type}, which is "
        "much slower. Rebuild with `python setup.py build_ext --inplace` (or tools/bootstrap.sh).",
        RuntimeWarning, stacklevel=3)


def dcnv3(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    group: int,
    group_channels: int,
    offset_scale: float,
    im2col_step: int,
    remove_center: bool = False,
) -> torch.Tensor:
    """DCNv3 on channels-last tensors (see dcnv3.md): the compiled kernel of the
    tensor's device, or the reference (with one warning) where there is none.
    ``im2col_step`` never changes the result; any batch size is accepted."""
    check_dcnv3_args(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                     dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
                     remove_center)
    params = (int(kernel_h), int(kernel_w), int(stride_h), int(stride_w), int(pad_h), int(pad_w),
              int(dilation_h), int(dilation_w), int(group), int(group_channels), float(offset_scale),
              int(im2col_step), bool(remove_center))
    # The portable ONNX form: DeformConv at opset >= 19, else the traced reference (export.py).
    if portable_deform_conv():
        return _DeformConvExport.apply(input, offset, mask, *params)
    if input.device.type in KERNEL_DEVICES and not portable_tracing():
        return torch.ops.ops_dcnv3.dcnv3(input, offset, mask, *params)
    if not portable_tracing():
        _warn_fallback(input.device.type)
    return dcnv3_core_pytorch(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                              pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
                              remove_center)


class _DeformConvExport(torch.autograd.Function):
    """Portable-form export at opset >= 19: computes DCNv3 (the trace runs it for real)
    and exports as ONNX DeformConv (onnx_deform.py)."""

    @staticmethod
    def forward(ctx, input, offset, mask, *params):
        if input.device.type in KERNEL_DEVICES:
            return torch.ops.ops_dcnv3.dcnv3(input, offset, mask, *params)
        return dcnv3_core_pytorch(input, offset, mask, *params[:-2], params[-1])

    @staticmethod
    def symbolic(g, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                 dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
                 remove_center):
        from .onnx_deform import DCNv3Attrs, TorchScriptBuilder, emit_deform_conv

        if g.opset < DEFORM_CONV_MIN_OPSET:
            raise RuntimeError(f"ops_dcnv3: DeformConv needs opset >= {DEFORM_CONV_MIN_OPSET}, "
                               f"the export runs at {g.opset}")
        attrs = DCNv3Attrs(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                           dilation_w, group, group_channels, offset_scale, remove_center)
        dtype = input.type().dtype() if input.type().dtype() is not None else torch.float32
        return emit_deform_conv(TorchScriptBuilder(g), input, offset, mask, attrs,
                                np.dtype(str(dtype).removeprefix("torch.")))


def _fake_dcnv3(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
                remove_center):
    n, h, w, c = input.shape
    out_h = output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    out_w = output_size(w, kernel_w, stride_w, pad_w, dilation_w)
    return input.new_empty((n, out_h, out_w, c))


def _fake_dcnv3_backward(grad_output, input, offset, mask, *params):
    # The kernels return contiguous gradients whatever the inputs' strides.
    return input.new_empty(input.shape), offset.new_empty(offset.shape), mask.new_empty(mask.shape)


def _setup_context(ctx, inputs, output):
    input, offset, mask, *params = inputs
    ctx.save_for_backward(input, offset, mask)
    ctx.params = params


def _backward(ctx, grad_output):
    input, offset, mask = ctx.saved_tensors
    grads = torch.ops.ops_dcnv3.dcnv3_backward(grad_output, input, offset, mask, *ctx.params)
    return (*grads, *([None] * len(ctx.params)))


def _onnx_symbolic(g, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                   dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
                   remove_center):
    """The node of the published deployment tooling: mmdeploy::TRTDCNv3 (dcnv3.md)."""
    from torch.onnx import symbolic_helper as sh

    ints = [sh._get_const(v, "i", name) for v, name in (
        (kernel_h, "kernel_h"), (kernel_w, "kernel_w"), (stride_h, "stride_h"), (stride_w, "stride_w"),
        (pad_h, "pad_h"), (pad_w, "pad_w"), (dilation_h, "dilation_h"), (dilation_w, "dilation_w"),
        (group, "group"), (group_channels, "group_channels"), (im2col_step, "im2col_step"))]
    out = g.op(
        "mmdeploy::TRTDCNv3", input, offset, mask,
        kernel_h_i=ints[0], kernel_w_i=ints[1], stride_h_i=ints[2], stride_w_i=ints[3],
        pad_h_i=ints[4], pad_w_i=ints[5], dilation_h_i=ints[6], dilation_w_i=ints[7],
        group_i=ints[8], group_channels_i=ints[9],
        offset_scale_f=sh._get_const(offset_scale, "f", "offset_scale"), im2col_step_i=ints[10],
        remove_center_i=int(sh._get_const(remove_center, "b", "remove_center")),
    )
    # The output's type and shape, which ONNX cannot infer for a custom node (the exporter
    # warns once per node otherwise): input's dtype, (N, H_out, W_out, C).
    sizes = input.type().varyingSizes()
    if sizes is not None and len(sizes) == 4:
        n, h, w, c = sizes
        h = None if h is None else output_size(h, ints[0], ints[2], ints[4], ints[6])
        w = None if w is None else output_size(w, ints[1], ints[3], ints[5], ints[7])
        out.setType(input.type().with_sizes([n, h, w, c]))
    return out


def _register() -> None:
    torch.library.register_fake("ops_dcnv3::dcnv3")(_fake_dcnv3)
    torch.library.register_fake("ops_dcnv3::dcnv3_backward")(_fake_dcnv3_backward)
    torch.library.register_autograd("ops_dcnv3::dcnv3", _backward, setup_context=_setup_context)
    try:
        from torch.onnx import register_custom_op_symbolic

        # Registered at opset 7, it serves every later opset too.
        register_custom_op_symbolic("ops_dcnv3::dcnv3", _onnx_symbolic, 7)
    except Exception as error:  # ONNX export is optional; the op works without it
        warnings.warn(f"ops_dcnv3: ONNX symbolic not registered ({error})", RuntimeWarning,
                      stacklevel=2)


if EXTENSION_ERROR is None:
    _register()
