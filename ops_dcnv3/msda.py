"""Multi-scale deformable attention (MSDA), the second operator of the package: the
compiled ``ops_dcnv3::msda`` (schema in csrc/msda.cpp; CPU and CUDA kernels on the bilinear
sampling code shared with DCNv3), its fake kernels, autograd and ONNX symbolic, and the
dispatching entry with mmcv's signature.

    from ops_dcnv3.msda import multi_scale_deformable_attn
    out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, im2col_step)

Semantics: ``../shared/spec/msda.md`` (mmcv's ``multi_scale_deformable_attn_pytorch``, i.e.
grid_sample per level, including NaN propagation). mmcv's own module and function are
switched to this kernel by :mod:`ops_dcnv3.mmcv_msda`."""

from __future__ import annotations

import warnings

import torch

from . import ops  # noqa: F401  (loads the extension: its import registers the schemas)
from .export import portable_tracing
from .msda_reference import multi_scale_deformable_attn_reference
from .msda_validation import check_msda_args
from .ops import EXTENSION_ERROR

OP = "ops_dcnv3::msda"
ONNX_NODE = "mmdeploy::MMCVMultiScaleDeformableAttention"  # mmdeploy's node, served by its TensorRT plugin


# False with no extension, or with one built before MSDA existed.
SCHEMA_PRESENT = EXTENSION_ERROR is None and hasattr(torch.ops.ops_dcnv3, "msda")


def _kernel_devices() -> frozenset[str]:
    if not SCHEMA_PRESENT:
        return frozenset()
    return frozenset(
        device
        for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
        if torch._C._dispatch_has_kernel_for_dispatch_key(OP, key)
    )


# Device types with a compiled MSDA kernel, fixed at import (a set lookup keeps the dispatch
# traceable by torch.compile).
KERNEL_DEVICES = _kernel_devices()
_warned_devices: set[str] = set()


def kernel_available(device: torch.device | str) -> bool:
    return torch.device(device).type in KERNEL_DEVICES


def _warn_fallback(device_type: str) -> None:
    if device_type in _warned_devices:
        return
    _warned_devices.add(device_type)
    reason = (
        f"the compiled extension did not load ({EXTENSION_ERROR})"
        if EXTENSION_ERROR
        else f"the compiled extension has no {device_type} MSDA kernel"
    )
    warnings.warn(
        f"ops_dcnv3: {reason}; multi-scale deformable attention uses the grid_sample reference on "
        f"{device_type}, which is much slower. Rebuild with `python setup.py build_ext --inplace`.",
        RuntimeWarning,
        stacklevel=3,
    )


def level_start_index_of(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """The start of each level in the flattened keys: the exclusive running sum of H*W."""
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Multi-scale deformable attention (msda.md) on the compiled kernel of the tensors'
    device, or on the grid_sample reference (with one warning) where there is none.

    value (batch, keys, heads, head_dim); spatial_shapes (levels, 2) integer (H, W);
    level_start_index (levels,); sampling_locations (batch, queries, heads, levels, points,
    2) normalised (x, y); attention_weights (batch, queries, heads, levels, points) ->
    (batch, queries, heads * head_dim). ``im2col_step`` is accepted for mmcv's signature and
    never changes the result; any batch size works. Gradients flow to value,
    sampling_locations and attention_weights."""
    check_msda_args(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
    )
    # The portable ONNX form traces the reference (standard operators only), see export.py.
    if value.device.type in KERNEL_DEVICES and not portable_tracing():
        return torch.ops.ops_dcnv3.msda(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, int(im2col_step)
        )
    if not portable_tracing():
        _warn_fallback(value.device.type)
    return multi_scale_deformable_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)


def _fake_msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    batch, _, heads, head_dim = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * head_dim))


def _fake_msda_backward(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
):
    # The kernels return contiguous gradients whatever the inputs' strides.
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(sampling_locations.shape),
        attention_weights.new_empty(attention_weights.shape),
    )


def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.im2col_step = im2col_step


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.ops_dcnv3.msda_backward(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.im2col_step,
    )
    return grad_value, None, None, grad_locations, grad_weights, None


def _onnx_symbolic(
    g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
):
    """mmdeploy's node for mmcv's MSDA, as mmdeploy 1.3's own symbolic writes it (what its
    TensorRT plugin implements): five inputs and ``im2col_step``."""
    from torch.onnx import symbolic_helper as sh

    out = g.op(
        ONNX_NODE,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step_i=sh._get_const(im2col_step, "i", "im2col_step"),
    )
    # The output's type and shape, which ONNX cannot infer for a custom node (the exporter
    # warns once per node otherwise): value's dtype, (N, queries, heads * head_dim).
    value_sizes = value.type().varyingSizes() or []
    location_sizes = sampling_locations.type().varyingSizes() or []
    if (len(value_sizes), len(location_sizes)) == (4, 6):
        n, _, heads, head_dim = value_sizes
        channels = None if heads is None or head_dim is None else heads * head_dim
        out.setType(value.type().with_sizes([n, location_sizes[1], channels]))
    return out


def _register() -> None:
    torch.library.register_fake(OP)(_fake_msda)
    torch.library.register_fake("ops_dcnv3::msda_backward")(_fake_msda_backward)
    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
    try:
        from torch.onnx import register_custom_op_symbolic

        register_custom_op_symbolic(OP, _onnx_symbolic, 7)  # serves every later opset too
    except Exception as error:  # ONNX export is optional; the op works without it
        warnings.warn(f"ops_dcnv3: MSDA ONNX symbolic not registered ({error})", RuntimeWarning, stacklevel=2)


if SCHEMA_PRESENT:
    _register()


__all__ = [
    "KERNEL_DEVICES",
    "kernel_available",
    "level_start_index_of",
    "multi_scale_deformable_attn",
    "multi_scale_deformable_attn_reference",
]
