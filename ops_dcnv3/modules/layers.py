"""Small layers shared by DCNv3 and the InternImage backbone: layout permutes and the
norm/activation builders whose Sequential wrapping fixes checkpoint parameter paths."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ToChannelsFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def build_norm_layer(dim: int, norm_layer: str, in_format: str = "channels_last",
                     out_format: str = "channels_last", eps: float = 1e-6) -> nn.Sequential:
    """'LN' (LayerNorm, applied channels-last) or 'BN' (BatchNorm2d, channels-first),
    wrapped with the permutes the formats need."""
    for name, fmt in (("in_format", in_format), ("out_format", out_format)):
        if fmt not in ("channels_first", "channels_last"):
            raise ValueError(f"{name} must be 'channels_first' or 'channels_last', got {fmt!r}")
    layers: list[nn.Module] = []
    if norm_layer == "BN":
        if in_format == "channels_last":
            layers.append(ToChannelsFirst())
        layers.append(nn.BatchNorm2d(dim))
        if out_format == "channels_last":
            layers.append(ToChannelsLast())
    elif norm_layer == "LN":
        if in_format == "channels_first":
            layers.append(ToChannelsLast())
        layers.append(nn.LayerNorm(dim, eps=eps))
        if out_format == "channels_first":
            layers.append(ToChannelsFirst())
    else:
        raise ValueError(f"norm_layer must be 'LN' or 'BN', got {norm_layer!r}")
    return nn.Sequential(*layers)


def build_act_layer(act_layer: str) -> nn.Module:
    if act_layer == "ReLU":
        return nn.ReLU(inplace=True)
    if act_layer == "SiLU":
        return nn.SiLU(inplace=True)
    if act_layer == "GELU":
        return nn.GELU()
    raise ValueError(f"act_layer must be 'ReLU', 'SiLU' or 'GELU', got {act_layer!r}")


def _onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN_LINEAR = _onednn_linear_available()


def linear(x: torch.Tensor, layer: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """``layer(x)`` (then exact GELU when ``gelu``). On CPU float32 inference it runs one
    oneDNN call with bias and GELU fused: ATen's addmm first copies the broadcast bias
    into its output and GELU is another pass over the activations, which together cost
    more than the matrix product itself on small-channel layers. Training, tracing,
    export and other devices/dtypes take the plain path."""
    if (_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()):
        shape = x.shape
        out = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, shape[-1]), layer.weight, layer.bias, "gelu" if gelu else "none", [], "none")
        return out.view(*shape[:-1], out.shape[-1])
    out = F.linear(x, layer.weight, layer.bias)
    return F.gelu(out) if gelu else out
