"""The DCNv3 module (dcnv3.md): ``DCNv3`` runs the compiled operator, ``DCNv3_pytorch``
the pure-PyTorch reference; both have the same parameters and checkpoint names."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dcnv3
from ..reference import dcnv3_core_pytorch
from .layers import (
    LayerNorm,
    ToChannelsLast,
    build_act_layer,
    build_norm_layer,
    depthwise_conv_last,
    depthwise_kernel_serves,
    hooks_attached,
    linear,
    mask_softmax,
)

IM2COL_STEP = 256


def _reference_core(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, group, gc, scale,
                    im2col_step, remove_center):
    return dcnv3_core_pytorch(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, group, gc,
                              scale, remove_center)


def _layout_message(module: str, shape: tuple[int, ...], channels: int) -> str:
    hint = ""
    if len(shape) == 4 and shape[1] == channels:
        hint = " (this looks like (N, C, H, W): pass input.permute(0, 2, 3, 1))"
    elif len(shape) == 3 and shape[-1] == channels:
        hint = " (no batch axis: pass input.unsqueeze(0))"
    return (f"{module} expects input of layout (N, H, W, C) with C = {channels} channels "
            f"(channels last), got shape {shape}{hint}")


class _DCNv3Base(nn.Module):
    core: Callable[..., torch.Tensor]
    softmax_kernel = False  # ops_dcnv3's mask softmax kernel where it serves (see _mask_softmax)

    def __init__(self, channels: int = 64, kernel_size: int = 3, dw_kernel_size: int | None = None,
                 stride: int = 1, pad: int = 1, dilation: int = 1, group: int = 4,
                 offset_scale: float = 1.0, act_layer: str = "GELU", norm_layer: str = "LN",
                 center_feature_scale: bool = False, remove_center: bool = False):
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels must be divisible by group, but got {channels} and {group}")
        group_channels = channels // group
        if group_channels & (group_channels - 1) != 0:
            warnings.warn(
                f"DCNv3: channels // group = {group_channels} is not a power of 2, which is less "
                "efficient in the kernels.", stacklevel=2)
        if remove_center and kernel_size % 2 == 0:
            raise ValueError(f"remove_center needs an odd kernel_size, got {kernel_size}")
        dw_kernel_size = dw_kernel_size if dw_kernel_size is not None else kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = group_channels
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        points = kernel_size * kernel_size - self.remove_center

        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, stride=1, padding=(dw_kernel_size - 1) // 2,
                      groups=channels),
            build_norm_layer(channels, norm_layer, "channels_first", "channels_last"),
            build_act_layer(act_layer),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for layer in (self.offset, self.mask):
            nn.init.constant_(layer.weight, 0.0)
            nn.init.constant_(layer.bias, 0.0)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, input: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """input: (N, H, W, C) -> (N, H', W', C); plus ``residual`` (of the output's shape)
        where given, added in the output projection's epilogue on CPU inference (linear)."""
        # static rank/channel check (no data-dependent branch: compile/export/ONNX trace through it)
        if input.dim() != 4 or input.shape[-1] != self.channels:
            raise ValueError(_layout_message(type(self).__name__, tuple(input.shape), self.channels))
        n, h, w, _ = input.shape
        value = linear(input, self.input_proj)
        query = self._depthwise(input)
        offset = linear(query, self.offset)
        mask = self._mask_softmax(query).view(n, h, w, -1)
        # The op's dtype: the value's, or float32 where the mask kernel turned bfloat16 logits
        # into a float32 mask (the CPU op computes bfloat16 in float32 copies anyway).
        dtype = torch.promote_types(value.dtype, mask.dtype)
        k = self.kernel_size
        out = type(self).core(
            value.to(dtype), offset.to(dtype), mask.to(dtype), k, k, self.stride, self.stride, self.pad,
            self.pad, self.dilation, self.dilation, self.group, self.group_channels, self.offset_scale,
            IM2COL_STEP, bool(self.remove_center))
        if self.center_feature_scale:
            scale = torch.sigmoid(F.linear(query, self.center_feature_scale_proj_weight,
                                           self.center_feature_scale_proj_bias))
            scale = scale.repeat_interleave(self.group_channels, dim=-1)
            out = out * (1 - scale) + value * scale
        return linear(out, self.output_proj, residual=residual)

    def _depthwise(self, input: torch.Tensor) -> torch.Tensor:
        """dw_conv on channels-last input: (N, H, W, C) -> (N, H, W, C). With LayerNorm and
        exact GELU (every published variant) the two run as one LayerNorm.forward_gelu after
        ops_dcnv3's depthwise kernel (depthwise_conv_last), and in CPU inference all three
        as one kernel (the convolution's output never written), unless a hook watches
        dw_conv or its parts (then they are called)."""
        conv, norm, act = self.dw_conv
        if (isinstance(act, nn.GELU) and act.approximate == "none" and len(norm) == 2
                and isinstance(norm[0], ToChannelsLast) and isinstance(norm[1], LayerNorm)
                and not hooks_attached(self.dw_conv, conv, norm, *norm, act)):
            if depthwise_kernel_serves(input, conv, norm[1]):
                return torch.ops.ops_dcnv3.depthwise_layer_norm_gelu_last(
                    input, conv.weight, conv.bias, norm[1].weight, norm[1].bias, norm[1].eps)
            return norm[1].forward_gelu(depthwise_conv_last(input, conv))
        return self.dw_conv(input.permute(0, 3, 1, 2))

    def _mask_softmax(self, query: torch.Tensor) -> torch.Tensor:
        """softmax(mask(query)) over each group's points, as a contiguous (N*H*W, group*P)
        tensor (the op would otherwise copy a transposed mask in the forward and again, the
        saved tensor, in the backward).

        The logits are the transposed product, (group*P, pixels): the softmax then runs
        with the long pixel axis innermost (over the 9-long innermost axis of the natural
        layout, ATen's softmax is several times slower). DCNv3 takes ops_dcnv3's mask
        softmax kernel on CPU, which also writes the (pixels, group*P) layout;
        DCNv3_pytorch keeps ATen's ops throughout."""
        weight, bias = self.mask.weight, self.mask.bias
        pixels = query.reshape(-1, query.shape[-1])
        logits = torch.addmm(bias.unsqueeze(1), weight, pixels.t())  # bias in the product, no extra pass
        return mask_softmax(logits, self.group, use_kernel=self.softmax_kernel)


class DCNv3(_DCNv3Base):
    """DCNv3 on the compiled kernel of the input's device (reference where none)."""

    core = staticmethod(dcnv3)
    softmax_kernel = True


class DCNv3_pytorch(_DCNv3Base):  # noqa: N801  (published name)
    """DCNv3 on the pure-PyTorch reference operator."""

    core = staticmethod(_reference_core)
