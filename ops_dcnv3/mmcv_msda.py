"""mmcv 2.x's multi-scale deformable attention on our kernel, with no config change.

mmcv's ``MultiScaleDeformableAttention`` module calls ``multi_scale_deformable_attn_pytorch``
(the grid_sample fallback) on CPU and ``MultiScaleDeformableAttnFunction`` (its CUDA kernel)
on CUDA, both looked up in ``mmcv.ops.multi_scale_deform_attn`` at call time. :func:`install`
(called by ``dense_common.stack_compat.apply``) makes:

- ``multi_scale_deformable_attn_pytorch`` run ``ops_dcnv3::msda`` wherever we have a
  kernel for the tensors' device (the original elsewhere);
- ``MultiScaleDeformableAttnFunction`` run our kernels on CPU (mmcv has none) and on CUDA
  when mmcv's extension was built without CUDA, keeping the class itself, so mmdeploy's
  symbolic for it (``mmdeploy::MMCVMultiScaleDeformableAttention``) still applies.

Nothing else changes: module parameters keep their names, so published checkpoints load.
Code that bound the function by name before ``install`` ran keeps the original.

Dtypes: mmcv's CUDA path casts locations and weights to value's dtype; we compute in the
widest of the three and return value's dtype (a bfloat16 location resolves only 1/256 of a
level, which would move samples by pixels)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .msda import kernel_available, level_start_index_of, multi_scale_deformable_attn

_MARK = "_ops_dcnv3_msda"


def _common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def mmcv_has_cuda_kernel() -> bool:
    """Whether mmcv's compiled extension includes its CUDA kernels."""
    try:
        from mmcv.ops import get_compiling_cuda_version

        return get_compiling_cuda_version() not in ("not available", "")
    except Exception:  # noqa: BLE001 - no mmcv extension at all: it has no kernel
        return False


def _make_pytorch_function(original):
    def multi_scale_deformable_attn_pytorch(
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
    ) -> torch.Tensor:
        if not kernel_available(value.device):
            return original(value, value_spatial_shapes, sampling_locations, attention_weights)
        dtype = _common_dtype(value, sampling_locations, attention_weights)
        out = multi_scale_deformable_attn(
            value.to(dtype),
            value_spatial_shapes,
            level_start_index_of(value_spatial_shapes),
            sampling_locations.to(dtype),
            attention_weights.to(dtype),
        )
        return out.to(value.dtype)

    multi_scale_deformable_attn_pytorch.__doc__ = (
        f"{original.__doc__ or ''}\n\n(ops_dcnv3: runs the compiled MSDA kernel where one exists for the "
        "device.)"
    )
    multi_scale_deformable_attn_pytorch.__wrapped__ = original
    setattr(multi_scale_deformable_attn_pytorch, _MARK, True)
    return multi_scale_deformable_attn_pytorch


def _patch_function(function_class, use_ours) -> None:
    """Our kernels inside mmcv's autograd.Function where ``use_ours(device)``."""
    original_forward = function_class.forward
    original_backward = function_class.backward

    def forward(
        ctx,
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        ctx.ops_dcnv3 = use_ours(value.device)
        if not ctx.ops_dcnv3:
            return original_forward(
                ctx,
                value,
                value_spatial_shapes,
                value_level_start_index,
                sampling_locations,
                attention_weights,
                im2col_step,
            )
        ctx.dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        dtype = _common_dtype(value, sampling_locations, attention_weights)
        ctx.im2col_step = int(im2col_step)
        tensors = (
            value.to(dtype),
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations.to(dtype),
            attention_weights.to(dtype),
        )
        ctx.save_for_backward(*tensors)
        return multi_scale_deformable_attn(*tensors, ctx.im2col_step).to(value.dtype)

    @once_differentiable
    def backward(ctx, grad_output):
        if not ctx.ops_dcnv3:
            return original_backward(ctx, grad_output)
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = torch.ops.ops_dcnv3.msda_backward(
            grad_output.to(value.dtype),
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            ctx.im2col_step,
        )
        value_dtype, locations_dtype, weights_dtype = ctx.dtypes
        return (
            grad_value.to(value_dtype),
            None,
            None,
            grad_locations.to(locations_dtype),
            grad_weights.to(weights_dtype),
            None,
        )

    function_class.forward = staticmethod(forward)
    function_class.backward = staticmethod(backward)
    setattr(function_class, _MARK, (original_forward, original_backward))


def install() -> bool:
    """Switches mmcv's MSDA function and module to our kernels (idempotent). Returns False
    when mmcv is not installed or our extension has no MSDA kernel."""
    try:
        import mmcv.ops as mmcv_ops
        import mmcv.ops.multi_scale_deform_attn as msda_module
    except ImportError:
        return False
    from .msda import KERNEL_DEVICES

    if not KERNEL_DEVICES:
        return False
    if not getattr(msda_module.multi_scale_deformable_attn_pytorch, _MARK, False):
        patched = _make_pytorch_function(msda_module.multi_scale_deformable_attn_pytorch)
        if getattr(mmcv_ops, "multi_scale_deformable_attn_pytorch", None) is patched.__wrapped__:
            mmcv_ops.multi_scale_deformable_attn_pytorch = patched
        msda_module.multi_scale_deformable_attn_pytorch = patched
    function_class = msda_module.MultiScaleDeformableAttnFunction
    if not hasattr(function_class, _MARK):
        mmcv_cuda = mmcv_has_cuda_kernel()

        def use_ours(device: torch.device) -> bool:
            return kernel_available(device) and not (device.type == "cuda" and mmcv_cuda)

        _patch_function(function_class, use_ours)
    return True


def uninstall() -> None:
    """Restores mmcv's own function and Function methods (for tests comparing both)."""
    try:
        import mmcv.ops as mmcv_ops
        import mmcv.ops.multi_scale_deform_attn as msda_module
    except ImportError:
        return
    patched = msda_module.multi_scale_deformable_attn_pytorch
    if getattr(patched, _MARK, False):
        msda_module.multi_scale_deformable_attn_pytorch = patched.__wrapped__
        if getattr(mmcv_ops, "multi_scale_deformable_attn_pytorch", None) is patched:
            mmcv_ops.multi_scale_deformable_attn_pytorch = patched.__wrapped__
    function_class = msda_module.MultiScaleDeformableAttnFunction
    originals = function_class.__dict__.get(_MARK)
    if originals is not None:
        function_class.forward, function_class.backward = (staticmethod(f) for f in originals)
        delattr(function_class, _MARK)
