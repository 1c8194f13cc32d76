"""Argument checks shared by every DCNv3 path (compiled kernels and reference).

Errors name the offending argument and what was expected, so a bad call never reaches
a kernel (which would otherwise read out of bounds or return garbage)."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings

import torch


def output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"dcnv3: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"dcnv3: {name} must be >= {minimum}, got {value}")


def check_dcnv3_args(
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
    im2col_step: int | None,
    remove_center: bool,
) -> tuple[int, int]:
    """Validates one DCNv3 call and returns the output size (Ho, Wo)."""
    tracing = torch.jit.is_tracing()
    # Under ONNX export the shape checks hold but the tracer warns that they are constants.
    with warnings.catch_warnings() if tracing else contextlib.nullcontext():
        if tracing:
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return _check(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
                      remove_center)


def _check(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
           dilation_w, group, group_channels, offset_scale, im2col_step, remove_center):
    for name, tensor in (("input", input), ("offset", offset), ("mask", mask)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"dcnv3: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(
                f"dcnv3: {name} must be 4-D channels-last (N, H, W, C), got shape {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise TypeError(f"dcnv3: {name} must be a floating-point tensor, got {tensor.dtype}")
    for name, tensor in (("offset", offset), ("mask", mask)):
        if tensor.dtype != input.dtype:
            raise TypeError(f"dcnv3: {name} dtype {tensor.dtype} differs from input dtype {input.dtype}")
        if tensor.device != input.device:
            raise ValueError(f"dcnv3: {name} is on {tensor.device} but input is on {input.device}")
    for name, value in (("kernel_h", kernel_h), ("kernel_w", kernel_w), ("stride_h", stride_h),
                        ("stride_w", stride_w), ("dilation_h", dilation_h),
                        ("dilation_w", dilation_w), ("group", group),
                        ("group_channels", group_channels)):
        _check_int(name, value, 1)
    _check_int("pad_h", pad_h, 0)
    _check_int("pad_w", pad_w, 0)
    if im2col_step is not None:
        _check_int("im2col_step", im2col_step, 1)
    if not isinstance(offset_scale, numbers.Real) or not math.isfinite(offset_scale):
        raise ValueError(f"dcnv3: offset_scale must be a finite number, got {offset_scale!r}")
    if remove_center and (kernel_h % 2 == 0 or kernel_w % 2 == 0):
        raise ValueError(
            f"dcnv3: remove_center needs an odd kernel, got kernel_h={kernel_h}, kernel_w={kernel_w}"
        )
    n, h, w, c = input.shape
    if c != group * group_channels:
        raise ValueError(
            f"dcnv3: input has {c} channels but group * group_channels = {group} * {group_channels}"
            f" = {group * group_channels}"
        )
    out_h = output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    out_w = output_size(w, kernel_w, stride_w, pad_w, dilation_w)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"dcnv3: empty output ({out_h}x{out_w}) for a {h}x{w} input with kernel "
            f"{kernel_h}x{kernel_w}, stride {stride_h}x{stride_w}, pad {pad_h}x{pad_w}, "
            f"dilation {dilation_h}x{dilation_w}"
        )
    points = kernel_h * kernel_w - int(bool(remove_center))
    expected_offset = (n, out_h, out_w, group * points * 2)
    if tuple(offset.shape) != expected_offset:
        raise ValueError(
            f"dcnv3: offset must have shape (N, Ho, Wo, group*P*2) = {expected_offset}, "
            f"got {tuple(offset.shape)}"
        )
    expected_mask = (n, out_h, out_w, group * points)
    if tuple(mask.shape) != expected_mask:
        raise ValueError(
            f"dcnv3: mask must have shape (N, Ho, Wo, group*P) = {expected_mask}, got {tuple(mask.shape)}"
        )
    return out_h, out_w
