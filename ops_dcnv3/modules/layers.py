"""Small layers shared by DCNv3 and the InternImage backbone: layout permutes and the
norm/activation builders whose Sequential wrapping fixes checkpoint parameter paths."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import extension_available


class ToChannelsFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def _eager_on_cpu(x: object) -> bool:
    """``x`` is a CPU tensor seen eagerly: not under tracing, scripting or compiling (those
    keep ATen's ops and their ONNX forms), not an FX proxy."""
    return (isinstance(x, torch.Tensor) and x.device.type == "cpu" and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def channels_last_memory(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) stored channels-last where it runs eagerly on CPU, else ``x``: the
    convolutions then write channels-last outputs, whose channels-last view is contiguous, so
    the LayerNorm after them runs ops_dcnv3's kernel instead of ATen's over a copy
    (InternImage-T's stem, batch 8: 17 -> 7 ms)."""
    return x.contiguous(memory_format=torch.channels_last) if _eager_on_cpu(x) and x.dim() == 4 else x


def _wants_grad(x: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether autograd would want a gradient of ``x`` or of a parameter of ``modules``."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for m in modules
                                                               for p in m.parameters()))


def _layer_norm_kernel_serves(x: object, norm: nn.LayerNorm) -> bool:
    """Whether ops_dcnv3's CPU LayerNorm kernel runs ``norm(x)``: a contiguous CPU tensor
    normalised over its last axis, float32/float64 (bfloat16 without gradients, with
    bfloat16 or float32 parameters: autocast leaves them float32), outside
    tracing, scripting and compiling (those keep ATen's layer_norm and its ONNX form)."""
    if not (_eager_on_cpu(x) and x.is_contiguous() and len(norm.normalized_shape) == 1 and x.dim() >= 1
            and x.shape[-1] == norm.normalized_shape[0] and x.shape[-1] > 0):
        return False
    params = [p for p in (norm.weight, norm.bias) if p is not None]
    wants_grad = _wants_grad(x, norm)
    # float32 parameters serve bfloat16 input (autocast) when no gradient is needed
    mixed_ok = x.dtype == torch.bfloat16 and not wants_grad
    if any(p.device != x.device or (p.dtype != x.dtype and not (mixed_ok and p.dtype == torch.float32))
           for p in params):
        return False
    supported = (torch.float32, torch.float64) + (() if wants_grad else (torch.bfloat16,))
    return x.dtype in supported and _cpu_op_built("layer_norm_last")


def _depthwise_geometry(x: object, conv: nn.Conv2d, op: str) -> bool:
    """Whether ops_dcnv3's CPU kernel ``op`` computes ``conv`` on channels-last ``x`` (N, H,
    W, C) eagerly: float32/float64, ``conv`` a depthwise k x k convolution (k odd, stride 1,
    dilation 1, zero padding (k - 1) / 2), its parameters in ``x``'s dtype and device."""
    if not (_eager_on_cpu(x) and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and type(conv) is nn.Conv2d and _cpu_op_built(op)):
        return False
    channels, k = x.shape[-1], conv.kernel_size[0]
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    return (conv.in_channels == conv.out_channels == conv.groups == channels and conv.kernel_size == (k, k)
            and k % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding == ((k - 1) // 2,) * 2 and conv.padding_mode == "zeros"
            and all(p.dtype == x.dtype and p.device == x.device for p in params))


def depthwise_kernel_serves(x: object, conv: nn.Conv2d, norm: nn.LayerNorm) -> bool:
    """Whether ops_dcnv3's depthwise_layer_norm_gelu_last computes GELU(norm(conv(x))) for
    channels-last ``x``: the convolution's kernel serves (_depthwise_geometry), no gradient
    is wanted, and ``norm`` is a LayerNorm over C in ``x``'s dtype."""
    return (_depthwise_geometry(x, conv, "depthwise_layer_norm_gelu_last") and not _wants_grad(x, conv, norm)
            and tuple(norm.normalized_shape) == (x.shape[-1],)
            and all(p.dtype == x.dtype and p.device == x.device for p in norm.parameters()))


class _DepthwiseConvLast(torch.autograd.Function):
    """The depthwise convolution's kernel and its backward (float64/float32 CPU; the weight
    and bias gradients are summed per fixed block of rows: no dependence on the threads)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.ops.ops_dcnv3.depthwise_conv_last(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.ops_dcnv3.depthwise_conv_last_backward(grad, x, weight)
        wanted = ctx.needs_input_grad
        return (grad_x if wanted[0] else None, grad_w if wanted[1] else None,
                grad_b if wanted[2] else None)


def depthwise_conv_last(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv`` (a depthwise convolution) of channels-last ``x`` (N, H, W, C), as (N, H, W, C):
    ops_dcnv3's kernel where it serves (_depthwise_geometry; a contiguous result; ATen's CPU
    depthwise backward is 4-10x its forward at InternImage-T's level 0), else ``conv`` on
    the channels-first view, permuted back."""
    if _depthwise_geometry(x, conv, "depthwise_conv_last_backward"):
        if _wants_grad(x, conv):
            return _DepthwiseConvLast.apply(x, conv.weight, conv.bias)
        return torch.ops.ops_dcnv3.depthwise_conv_last(x, conv.weight, conv.bias)
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def hooks_attached(*modules: nn.Module) -> bool:
    """Whether a forward/backward hook (on any of ``modules``, or global) would see their
    calls: a fused path that skips calling them must then call them instead."""
    from torch.nn.modules import module as module_state

    if (module_state._global_forward_hooks or module_state._global_forward_pre_hooks
            or module_state._global_backward_hooks or module_state._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in modules)


@functools.cache
def _cpu_op_built(name: str) -> bool:
    """Whether the built extension registers ``ops_dcnv3::<name>`` (looked up once per op)."""
    return extension_available() and hasattr(torch.ops.ops_dcnv3, name)


class _LayerNormLast(torch.autograd.Function):
    """The kernel's forward and backward (float64/float32; the weight and bias gradients
    are summed per fixed block of rows, so they do not depend on the thread count)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        out, mean, rstd = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight)
        wanted = ctx.needs_input_grad  # False for an absent weight or bias
        return (grad_x if wanted[0] else None, grad_w if wanted[1] else None,
                grad_b if wanted[2] else None, None)


class _LayerNormGELULast(torch.autograd.Function):
    """GELU(LayerNorm(x)) in one kernel pass that also writes the GELU's derivative; the
    backward multiplies it into the incoming gradient inside the LayerNorm backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        out, derivative, mean, rstd = torch.ops.ops_dcnv3.layer_norm_gelu_last(x, weight, bias, eps, True)
        ctx.save_for_backward(x, weight, mean, rstd, derivative)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, mean, rstd, derivative = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight,
                                                                             derivative)
        wanted = ctx.needs_input_grad
        return (grad_x if wanted[0] else None, grad_w if wanted[1] else None,
                grad_b if wanted[2] else None, None)


class _MaskSoftmax(torch.autograd.Function):
    """ops_dcnv3's mask softmax and its backward (float32/float64 CPU)."""

    @staticmethod
    def forward(ctx, logits, group):
        mask = torch.ops.ops_dcnv3.mask_softmax(logits, group)
        ctx.save_for_backward(mask)
        ctx.group = group
        return mask

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.ops.ops_dcnv3.mask_softmax_backward(grad, mask, ctx.group), None


def mask_softmax(logits: torch.Tensor, group: int, use_kernel: bool = True) -> torch.Tensor:
    """DCNv3's modulation mask from logits laid out (group * P, pixels): the softmax over each
    group's P points, as a contiguous (pixels, group * P) tensor.

    With ``use_kernel``, on CPU (float32/float64, and bfloat16 logits without gradients,
    which give a float32 mask; eagerly) one kernel pass does the softmax and the
    transposition; otherwise (and where tracing, exporting or compiling) it is ATen's
    softmax over the outer points axis, then a transposing copy."""
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    dtypes = (torch.float32, torch.float64) + (() if wants_grad else (torch.bfloat16,))
    if use_kernel and _eager_on_cpu(logits) and logits.dtype in dtypes and _cpu_op_built("mask_softmax"):
        if wants_grad:
            return _MaskSoftmax.apply(logits, group)
        return torch.ops.ops_dcnv3.mask_softmax(logits, group)
    mask = logits.view(group, logits.shape[0] // group, -1).softmax(dim=1)
    return mask.view(logits.shape[0], -1).t().contiguous()


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters, same values up to rounding) that runs ops_dcnv3's
    CPU kernel on channels-last activations: ATen's CPU LayerNorm spends ~150 ns of
    bookkeeping per row, the larger part of a 64- to 256-channel row (InternImage applies
    three per block; 1.4-2x faster per call in float32 here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _layer_norm_kernel_serves(x, self):
            return super().forward(x)
        if torch.is_grad_enabled():
            return _LayerNormLast.apply(x, self.weight, self.bias, self.eps)
        return torch.ops.ops_dcnv3.layer_norm_last(x, self.weight, self.bias, self.eps)[0]

    def forward_gelu(self, x: torch.Tensor) -> torch.Tensor:
        """``F.gelu(self(x))`` (exact GELU). Where the kernel serves, one pass: the norm's
        output is never written, and in training the GELU's derivative is, so the backward
        needs no gelu_backward (DCNv3's depthwise path: conv, LayerNorm, GELU)."""
        if not (_layer_norm_kernel_serves(x, self) and _cpu_op_built("layer_norm_gelu_last")):
            return F.gelu(super().forward(x))
        if _wants_grad(x, self):
            return _LayerNormGELULast.apply(x, self.weight, self.bias, self.eps)
        return torch.ops.ops_dcnv3.layer_norm_gelu_last(x, self.weight, self.bias, self.eps, False)[0]


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
        layers.append(LayerNorm(dim, eps=eps))
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
# Float32 products through oneDNN only where the CPU has AVX-512 (Zen 4/5: MKL's sgemm runs
# its AVX2 code on AMD, oneDNN its AVX-512 code). With AVX2 alone (AMD EPYC Zen 3) both are
# AVX2 and MKL's sgemm (ATen's mm/addmm) is the faster: InternImage-T's block linears in
# inference, batch 8, 2 threads, interleaved, 548 -> 475 ms per batch (0.78-1.0x by shape).
_ONEDNN_FLOAT32 = _ONEDNN_LINEAR and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
# oneDNN's bfloat16 inner product needs AVX-512 (or AVX2-VNNI-2); on an AVX2-only CPU (AMD
# EPYC Zen 3) it cannot create the primitive, so bfloat16 takes ATen's plain linear there.
_ONEDNN_BF16_LINEAR = _ONEDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _fused_cpu_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype one fused oneDNN linear call runs in for ``x``: float32 on CPU float32
    inference where oneDNN serves float32 (_ONEDNN_FLOAT32), bfloat16 under CPU bfloat16
    autocast where oneDNN supports it; None elsewhere (training, tracing, compiling, other
    devices and dtypes, and float32 inference on ATen's products: _aten_inference)."""
    if not (_ONEDNN_LINEAR and _eager_on_cpu(x) and not torch.is_grad_enabled()):
        return None
    if torch.is_autocast_enabled("cpu"):
        bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16
        return (torch.bfloat16 if bf16 and _ONEDNN_BF16_LINEAR and x.dtype in (torch.float32, torch.bfloat16)
                else None)
    return torch.float32 if x.dtype == torch.float32 and _ONEDNN_FLOAT32 else None


def _aten_inference(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether ``linear(x, layer, ...)`` runs CPU float32 inference on ATen's products with
    the bias, GELU and residual add fused around them (_linear_aten): no gradients, eagerly,
    not under autocast, float32 ``x`` and parameters on CPU, where oneDNN does not serve."""
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    return (not _ONEDNN_FLOAT32 and not torch.is_grad_enabled() and _eager_on_cpu(x)
            and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
            and _cpu_op_built("bias_gelu_"))


# Rows per block of the MLP's float32 inference on ATen's products (mlp_in_row_blocks): fc1's
# output block (1568 x 4C floats, 1.6 MB at level 0, 3.2 MB at level 1) is still in cache
# when the GELU and fc2 read it; the whole hidden tensor (25.7 MB at level 0, batch 8) was
# not. InternImage-T inference, batch 8, 2 threads, Zen 3, 30 alternating runs: 739 -> 708
# ms per batch (CPU time 1470 -> 1410 ms). The same values: each row's arithmetic is as
# unblocked.
MLP_ROW_BLOCK = 1568


def _residual_fits(residual: torch.Tensor | None, layer: nn.Linear) -> bool:
    return residual is None or (residual.is_contiguous() and residual.dtype == torch.float32
                                and residual.shape[-1] == layer.out_features)


def _start_of_sum(flat: torch.Tensor, layer: nn.Linear, residual: torch.Tensor | None) -> torch.Tensor:
    """A new (rows of ``flat``, out_features) tensor holding ``residual`` plus ``layer``'s
    bias (either may be absent), for ``layer``'s product to be added into in place."""
    rows, bias = flat.shape[0], layer.bias
    if residual is not None:
        start = residual.reshape(rows, -1)
        return start + bias if bias is not None else start.clone()
    if bias is not None:
        return bias.expand(rows, -1).contiguous()
    return flat.new_zeros(rows, layer.out_features)


def mlp_in_row_blocks_serves(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear,
                             residual: torch.Tensor | None) -> bool:
    """Whether mlp_in_row_blocks computes the MLP (float32 CPU inference on ATen's products,
    _aten_inference, for both linears; a contiguous float32 residual if any)."""
    return _aten_inference(x, fc1) and _aten_inference(x, fc2) and _residual_fits(residual, fc2)


def mlp_in_row_blocks(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))`` (exact GELU), plus ``residual`` where given, for CPU float32
    inference (mlp_in_row_blocks_serves), MLP_ROW_BLOCK rows at a time: per block fc1's
    product, its bias and GELU in one pass in place (bias_gelu_), and fc2's product added
    into the output, which starts as the residual plus fc2's bias."""
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    out = _start_of_sum(flat, fc2, residual)
    first, second = fc1.weight.t(), fc2.weight.t()
    for begin in range(0, rows, MLP_ROW_BLOCK):
        block = slice(begin, begin + MLP_ROW_BLOCK)
        hidden = torch.ops.ops_dcnv3.bias_gelu_(flat[block].mm(first), fc1.bias)
        out[block].addmm_(hidden, second)
    return out.view(*x.shape[:-1], fc2.out_features)


def _linear_aten(x: torch.Tensor, layer: nn.Linear, gelu: bool,
                 residual: torch.Tensor | None) -> torch.Tensor:
    """``linear`` on ATen's products, each pass over the output fused: fc1's bias and GELU
    in one kernel pass after the product (addmm would copy the bias into every row first,
    and a GELU pass follow), the residual (plus the bias) as the product's starting value."""
    flat = x.reshape(-1, x.shape[-1])
    if residual is not None:
        out = _start_of_sum(flat, layer, residual).addmm_(flat, layer.weight.t())
    elif gelu:
        out = torch.ops.ops_dcnv3.bias_gelu_(flat.mm(layer.weight.t()), layer.bias)
    else:
        out = F.linear(flat, layer.weight, layer.bias)
    return out.view(*x.shape[:-1], out.shape[-1])


def _product_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` for 2-D CPU tensors in training: oneDNN's matmul in float32 where
    it serves (_ONEDNN_FLOAT32; it takes ``b`` strided, so ``b`` may be a transposed
    weight), ATen's addmm/mm otherwise. ATen's float32 products go to MKL's sgemm, which on
    AMD EPYC Zen 5 runs its AVX2 code (90-150 GFLOP/s at 2 threads at InternImage-T's
    shapes, oneDNN 235-340); on AVX2-only Zen 3 it is the faster of the two (training step
    2444 -> 2348 ms, interleaved)."""
    if a.dtype == torch.float32 and _ONEDNN_FLOAT32:
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    return a.mm(b.t()) if bias is None else torch.addmm(bias, a, b.t())


def _linear_grads(ctx, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor):
    """(grad_x, grad_weight, grad_bias) of ``x @ weight.T + bias`` from the 2-D gradient
    ``grad`` of the output (before any activation), each where wanted (a missing bias wants
    none). The weight gradient stays on ATen's mm: its long reduction over the pixels is no
    faster in oneDNN (mixed, 0.6-1.6x, at InternImage-T's shapes)."""
    needs_x, needs_w, needs_b = ctx.needs_input_grad
    grad_x = _product_nt(grad, weight.t()).view(x.shape) if needs_x else None
    grad_w = grad.t().mm(x.reshape(-1, x.shape[-1])) if needs_w else None
    return grad_x, grad_w, grad.sum(0) if needs_b else None


class _Linear(torch.autograd.Function):
    """``x @ weight.T + bias`` for CPU float32 training through oneDNN (_product_nt): the
    forward with the bias in the product's epilogue, the input gradient likewise."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        out = _product_nt(x.reshape(-1, x.shape[-1]), weight, bias)
        ctx.save_for_backward(x, weight)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return _linear_grads(ctx, x, weight, grad.reshape(-1, grad.shape[-1]))


class _LinearGELU(torch.autograd.Function):
    """gelu(x @ weight.T + bias) for CPU training. The kernel writes the GELU and, over the
    pre-activation (which nothing else needs), its derivative; the backward is then one
    product instead of ATen's gelu_backward, which evaluates erf and exp again."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # The bias goes into the GELU's pass: addmm would copy it into every row first.
        pre = _product_nt(x.reshape(-1, x.shape[-1]), weight)
        out = torch.ops.ops_dcnv3.gelu_with_derivative_(pre, bias)
        ctx.save_for_backward(x, weight, pre)  # pre now holds gelu'(pre)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, derivative = ctx.saved_tensors
        return _linear_grads(ctx, x, weight, grad.reshape(derivative.shape) * derivative)


def _trains_on_cpu(x: torch.Tensor, layer: nn.Linear, dtypes: tuple[torch.dtype, ...]) -> bool:
    """Gradients wanted, ``x`` on CPU eagerly in one of ``dtypes``, the weights in its dtype
    and on its device, not under autocast (whose bfloat16 products take the plain path)."""
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    return (torch.is_grad_enabled() and _eager_on_cpu(x) and x.dtype in dtypes
            and (x.requires_grad or any(p.requires_grad for p in params))
            and not torch.is_autocast_enabled("cpu") and all(p.dtype == x.dtype and p.device == x.device
                                                             for p in params))


def _gelu_kernel_trains(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether ``linear(x, layer, gelu=True)`` trains through _LinearGELU (float32/float64)."""
    return _trains_on_cpu(x, layer, (torch.float32, torch.float64)) and _cpu_op_built("gelu_with_derivative_")


def _onednn_trains(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether ``linear(x, layer)`` trains through _Linear (float32 where oneDNN serves it)."""
    return _ONEDNN_FLOAT32 and _trains_on_cpu(x, layer, (torch.float32,))


def linear(x: torch.Tensor, layer: nn.Linear, gelu: bool = False,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)``, then exact GELU with ``gelu`` or ``residual +`` with ``residual``.

    On CPU inference (float32 where the CPU has AVX-512, or bfloat16 under autocast) this is
    one oneDNN call with the bias and the GELU or the residual add in the matrix product's
    epilogue: ATen's addmm first copies the broadcast bias into its output, and each
    separate pass over the activations (GELU, the residual add) costs about a third of the
    product on the small-channel levels. Float32 inference on AVX2 alone takes ATen's
    product with those passes fused around it (_linear_aten, see _ONEDNN_FLOAT32).
    Training, tracing, export and other devices/dtypes take the plain path (the same values
    up to rounding); CPU training takes _LinearGELU with ``gelu`` and _Linear without
    (float32 on oneDNN's products, see _product_nt).
    """
    if gelu and residual is not None:
        raise ValueError("linear: pass gelu or residual, not both")
    if gelu and _gelu_kernel_trains(x, layer):
        return _LinearGELU.apply(x, layer.weight, layer.bias)
    if not gelu and _onednn_trains(x, layer):
        out = _Linear.apply(x, layer.weight, layer.bias)
        return out if residual is None else residual + out
    dtype = _fused_cpu_dtype(x)
    if dtype is None and _aten_inference(x, layer) and _residual_fits(residual, layer):
        return _linear_aten(x, layer, gelu, residual)
    if dtype is None or (residual is not None and not residual.is_contiguous()):
        out = F.linear(x, layer.weight, layer.bias)
        out = F.gelu(out) if gelu else out
        return out if residual is None else residual + out
    shape = x.shape
    flat = x.reshape(-1, shape[-1]).to(dtype)
    weight = layer.weight.to(dtype)
    bias = layer.bias.to(dtype) if layer.bias is not None else None
    if residual is not None:
        out = torch.ops.mkldnn._linear_pointwise.binary(
            flat, residual.reshape(-1, residual.shape[-1]).to(dtype), weight, bias, "add")
    else:
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "gelu" if gelu else "none", [], "none")
    return out.view(*shape[:-1], out.shape[-1])
