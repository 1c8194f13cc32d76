"""Pure-PyTorch DCNv3: the ground truth the compiled kernels are tested against.

Built on ``grid_sample`` (bilinear, zero padding, align_corners=False), which computes
exactly the operator's sampling rule of dcnv3.md. Works on any device; float16 and
bfloat16 inputs are computed in float32 (the sampling grid needs the precision) and
returned in their own dtype."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .validation import check_dcnv3_args


def _tap_grid(kernel_h: int, kernel_w: int, dilation_h: int, dilation_w: int,
              remove_center: bool, dtype: torch.dtype, device: torch.device):
    """Regular-grid displacement (dx, dy) of each tap, width index outer.

    Built from Python lists so that an ONNX trace sees two constants (no boolean
    indexing, which would export as NonZero/Gather)."""
    half_w = dilation_w * (kernel_w - 1) // 2
    half_h = dilation_h * (kernel_h - 1) // 2
    taps = [(i * dilation_w - half_w, j * dilation_h - half_h)
            for i in range(kernel_w) for j in range(kernel_h)
            if not (remove_center and i == kernel_w // 2 and j == kernel_h // 2)]
    with warnings.catch_warnings():
        # A trace records them as constants, which is what they are: silence the tracer.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return (torch.tensor([t[0] for t in taps], dtype=dtype, device=device),
                torch.tensor([t[1] for t in taps], dtype=dtype, device=device))


def dcnv3_core_pytorch(
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
    remove_center: bool = False,
) -> torch.Tensor:
    """DCNv3 on channels-last tensors: input (N, H, W, C), offset (N, Ho, Wo, G*P*2),
    mask (N, Ho, Wo, G*P) -> (N, Ho, Wo, C). Same arguments as the kernel minus
    im2col_step."""
    out_h, out_w = check_dcnv3_args(
        input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
        dilation_h, dilation_w, group, group_channels, offset_scale, None, remove_center)
    n, h, w, c = input.shape
    if n == 0 and not torch.jit.is_tracing():  # reshape(-1, ...) cannot size an empty batch
        return input.new_empty((0, out_h, out_w, c))
    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    device = input.device
    tap_x, tap_y = _tap_grid(kernel_h, kernel_w, dilation_h, dilation_w, remove_center, dtype, device)
    points = tap_x.numel()

    half_w = dilation_w * (kernel_w - 1) // 2
    half_h = dilation_h * (kernel_h - 1) // 2
    centre_x = torch.arange(out_w, device=device, dtype=dtype) * stride_w + (half_w - pad_w)
    centre_y = torch.arange(out_h, device=device, dtype=dtype) * stride_h + (half_h - pad_h)

    # -1 for the batch everywhere: a trace for ONNX then keeps the batch dynamic.
    off = offset.to(dtype).reshape(-1, out_h, out_w, group, points, 2)
    x = centre_x.view(1, 1, out_w, 1, 1) + (tap_x + off[..., 0]) * offset_scale
    y = centre_y.view(1, out_h, 1, 1, 1) + (tap_y + off[..., 1]) * offset_scale
    # Pixel centres sit at integers; grid_sample wants [-1, 1] over the pixel edges.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(-1, out_h * out_w, points, 2)

    value = input.to(dtype).reshape(-1, h, w, group, group_channels)
    value = value.permute(0, 3, 4, 1, 2).reshape(-1, group_channels, h, w)
    sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    weight = mask.to(dtype).reshape(-1, out_h * out_w, group, points).transpose(1, 2)
    weight = weight.reshape(-1, 1, out_h * out_w, points)
    out = (sampled * weight).sum(-1)  # (N*G, gc, Ho*Wo)
    out = out.reshape(-1, group, group_channels, out_h, out_w).permute(0, 3, 4, 1, 2)
    return out.reshape(-1, out_h, out_w, c).to(input.dtype)
