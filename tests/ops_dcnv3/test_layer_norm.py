"""ops_dcnv3's CPU LayerNorm kernel (layer_norm_last) and the LayerNorm module that uses
it, against ATen's layer_norm: values, mean/rstd, gradients, every CPU code path, the
fallbacks (non-contiguous input, tracing, bfloat16 training) and bad input; and the fused
LayerNorm + GELU (layer_norm_gelu_last, the backward's grad_scale, LayerNorm.forward_gelu)
against LayerNorm then an erfc GELU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules.layers import LayerNorm, build_norm_layer

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 C++ kernels not built")

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 1.6e-2}


def _inputs(shape, dtype, offset=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    channels = shape[-1]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + offset).to(dtype)
    weight = torch.randn(channels, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(channels, generator=gen, dtype=torch.float64).to(dtype)
    return x, weight, bias


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 5, 7, 64), (3, 4, 256), (9, 70), (4, 3), (6, 1), (2, 3, 3, 512)])
def test_kernel_matches_aten(monkeypatch, cpu_isas, dtype, shape):
    for isa in cpu_isas:  # every CPU code path (DCNV3_CPU_ISA)
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        _check_against_aten(dtype, shape)


def _check_against_aten(dtype, shape):
    x, weight, bias = _inputs(shape, dtype, seed=len(shape) * 100 + shape[-1])
    out, mean, rstd = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, 1e-6)
    ref = F.layer_norm(x.double(), shape[-1:], weight.double(), bias.double(), 1e-6)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out.double(), ref, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * 8)
    _, ref_mean, ref_rstd = torch.native_layer_norm(x.double(), shape[-1:], None, None, 1e-6)
    assert mean.shape == rstd.shape == ref_mean.shape
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(mean.double(), ref_mean, rtol=tol, atol=tol)
    torch.testing.assert_close(rstd.double(), ref_rstd, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_statistics_stay_exact_far_from_zero(dtype):
    """Rows around 1e4 with unit spread: a plain E[x^2] - E[x]^2 would lose float32's digits."""
    x, weight, bias = _inputs((64, 96), dtype, offset=1e4)
    out = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, 1e-6)[0]
    ref = F.layer_norm(x.double(), (96,), weight.double(), bias.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=1e-3 if dtype == torch.float32 else 1e-10,
                               atol=1e-3 if dtype == torch.float32 else 1e-10)


def test_bfloat16_input_with_float32_parameters_as_autocast_leaves_them():
    x, weight, bias = _inputs((6, 5, 96), torch.float32)
    out = torch.ops.ops_dcnv3.layer_norm_last(x.bfloat16(), weight, bias, 1e-6)[0]
    assert out.dtype == torch.bfloat16
    ref = F.layer_norm(x.bfloat16().double(), (96,), weight.double(), bias.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=1.6e-2, atol=5e-2)
    norm = LayerNorm(96, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        torch.testing.assert_close(norm(x.bfloat16()), out, rtol=0, atol=0)


def test_no_affine_and_non_finite_rows():
    x = torch.randn(5, 40)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    out = torch.ops.ops_dcnv3.layer_norm_last(x, None, None, 1e-5)[0]
    ref = F.layer_norm(x, (40,), None, None, 1e-5)
    assert torch.equal(out.isnan(), ref.isnan())
    torch.testing.assert_close(out[[0, 3, 4]], ref[[0, 3, 4]], rtol=2e-5, atol=2e-5)


def test_module_forward_and_gradients_match_nn_layernorm():
    torch.manual_seed(0)
    ours, ref = LayerNorm(48, eps=1e-6), torch.nn.LayerNorm(48, eps=1e-6)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
    ref.load_state_dict(ours.state_dict())  # same parameter names: checkpoints load either way
    x = torch.randn(2, 6, 6, 48, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 6, 6, 48)
    ours(x).backward(grad)
    ref(x_ref).backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_module_gradcheck_float64():
    norm = LayerNorm(12, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 4, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: norm(x) * w.sum() + b.sum(), (x, norm.weight, norm.bias))
    assert torch.autograd.gradcheck(lambda x: norm(x).square().sum(), (x,))


def test_fallbacks_give_atens_values():
    norm = build_norm_layer(32, "LN")[0]
    assert isinstance(norm, LayerNorm) and isinstance(norm, torch.nn.LayerNorm)
    x = torch.randn(2, 32, 5, 5).permute(0, 2, 3, 1)  # channels-last view, not contiguous
    torch.testing.assert_close(norm(x), F.layer_norm(x, (32,), norm.weight, norm.bias, norm.eps))
    traced = torch.jit.trace(norm, torch.randn(2, 5, 5, 32))
    assert "aten::layer_norm" in str(traced.graph)  # exported graphs keep ATen's op (ONNX LayerNormalization)
    bf16 = LayerNorm(32).bfloat16()
    xb = torch.randn(4, 32, dtype=torch.bfloat16, requires_grad=True)
    bf16(xb).sum().backward()  # bfloat16 training takes ATen's path
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16


def test_bad_parameters_are_named():
    with pytest.raises(RuntimeError, match="weight and bias must be 1-D of 8 values"):
        torch.ops.ops_dcnv3.layer_norm_last(torch.randn(3, 8), torch.ones(7), None, 1e-5)
    with pytest.raises(RuntimeError, match="input must be float64, float32 or bfloat16"):
        torch.ops.ops_dcnv3.layer_norm_last(torch.ones(3, 8, dtype=torch.int32), None, None, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 5, 7, 64), (9, 70), (4, 3), (6, 1), (300, 24), (2, 3, 3, 512)])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_kernel_matches_aten(monkeypatch, cpu_isas, dtype, shape, affine):
    x, weight, bias = _inputs(shape, dtype, offset=2.0, seed=shape[-1])
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
    weight = weight if affine else None
    _, mean, rstd = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias if affine else None, 1e-6)
    ref = torch.ops.aten.native_layer_norm_backward(
        grad.double(), x.double(), shape[-1:], mean.double(), rstd.double(),
        None if weight is None else weight.double(), None, [True, False, False])
    ref_w = (grad.double() * (x.double() - mean.double()) * rstd.double()).reshape(-1, shape[-1]).sum(0)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        grad_x, grad_w, grad_b = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight)
        assert grad_x.dtype == grad_w.dtype == grad_b.dtype == dtype
        torch.testing.assert_close(grad_x.double(), ref[0], rtol=tol, atol=tol)
        torch.testing.assert_close(grad_w.double(), ref_w, rtol=tol, atol=tol * shape[0])
        torch.testing.assert_close(grad_b.double(), grad.double().reshape(-1, shape[-1]).sum(0),
                                   rtol=tol, atol=tol * shape[0])


def test_backward_parameter_gradients_do_not_depend_on_threads():
    x, weight, bias = _inputs((8, 28, 28, 128), torch.float32)
    grad = torch.randn(x.shape)
    _, mean, rstd = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, 1e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight)
        torch.set_num_threads(2)
        two = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_backward_bad_input_is_named():
    x = torch.randn(4, 8)
    stats = torch.ops.ops_dcnv3.layer_norm_last(x, None, None, 1e-5)
    with pytest.raises(RuntimeError, match="grad_output must match the input"):
        torch.ops.ops_dcnv3.layer_norm_last_backward(torch.randn(4, 7), x, stats[1], stats[2], None)
    with pytest.raises(RuntimeError, match="mean and rstd must hold one"):
        torch.ops.ops_dcnv3.layer_norm_last_backward(torch.randn(4, 8), x, stats[1][:2], stats[2], None)
    with pytest.raises(RuntimeError, match="weight must be 1-D of 8"):
        torch.ops.ops_dcnv3.layer_norm_last_backward(torch.randn(4, 8), x, stats[1], stats[2], torch.ones(3))
    with pytest.raises(RuntimeError, match="input must be float64 or float32"):
        xb = x.bfloat16()
        torch.ops.ops_dcnv3.layer_norm_last_backward(xb, xb, stats[1], stats[2], None)


# ---------------------------------------------------------------- LayerNorm + GELU
def _gelu_reference(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU and its derivative in float64 through erfc."""
    cdf = 0.5 * torch.special.erfc(-v / 2**0.5)
    return v * cdf, cdf + v * torch.exp(-0.5 * v * v) / (2 * torch.pi) ** 0.5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 5, 7, 64), (9, 70), (4, 3), (2, 3, 3, 512)])
def test_layer_norm_gelu_matches_the_composition(monkeypatch, cpu_isas, dtype, shape):
    x, weight, bias = _inputs(shape, dtype, seed=shape[-1] + 1)
    norm = F.layer_norm(x.double(), shape[-1:], weight.double(), bias.double(), 1e-6)
    ref, ref_derivative = _gelu_reference(norm)
    tol = {torch.float64: 1e-12, torch.float32: 3e-5, torch.bfloat16: 1.6e-2}[dtype]
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        want_derivative = dtype != torch.bfloat16
        out, derivative, mean, rstd = torch.ops.ops_dcnv3.layer_norm_gelu_last(x, weight, bias, 1e-6,
                                                                               want_derivative)
        assert out.dtype == dtype and out.shape == x.shape
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 8)
        plain = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, 1e-6)
        assert torch.equal(mean, plain[1]) and torch.equal(rstd, plain[2])
        if want_derivative:
            assert derivative.dtype == dtype
            torch.testing.assert_close(derivative.double(), ref_derivative, rtol=tol, atol=tol * 8)
        else:
            assert derivative is None or derivative.numel() == 0  # not asked for: undefined


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grad_scale_multiplies_the_incoming_gradient(monkeypatch, cpu_isas, dtype):
    x, weight, bias = _inputs((3, 6, 70), dtype, offset=1.0, seed=3)
    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    scale = torch.rand(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    _, mean, rstd = torch.ops.ops_dcnv3.layer_norm_last(x, weight, bias, 1e-6)
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        fused = torch.ops.ops_dcnv3.layer_norm_last_backward(grad, x, mean, rstd, weight, scale)
        plain = torch.ops.ops_dcnv3.layer_norm_last_backward(grad * scale, x, mean, rstd, weight)
        for a, b in zip(fused, plain):
            torch.testing.assert_close(a, b, rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=1e-6)


def test_forward_gelu_trains_like_layer_norm_then_gelu():
    torch.manual_seed(0)
    ours = LayerNorm(48, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref = torch.nn.LayerNorm(48, eps=1e-6)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 7, 48, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours.forward_gelu(x), F.gelu(ref(x_ref))
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=2e-6)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    norm64 = LayerNorm(12).double()
    x64 = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w, b: norm64.forward_gelu(t) * w.sum() + b.sum(),
                                    (x64, norm64.weight, norm64.bias))
    with torch.no_grad():  # inference, float32 and bfloat16 (autocast's float32 parameters)
        torch.testing.assert_close(ours.forward_gelu(x), out_ref, rtol=1e-5, atol=2e-6)
        low = ours.forward_gelu(x.bfloat16())
        assert low.dtype == torch.bfloat16
        torch.testing.assert_close(low.float(), out_ref, rtol=0.02, atol=0.02)
    frozen = LayerNorm(48, eps=1e-6)
    frozen.load_state_dict(ours.state_dict())
    frozen.requires_grad_(False)  # gradients enabled, none wanted (a frozen stage): no derivative
    torch.testing.assert_close(frozen.forward_gelu(x.detach().bfloat16()).float(), out_ref.detach(),
                               rtol=0.02, atol=0.02)
    strided = x.detach().permute(0, 2, 1, 3)  # not contiguous: ATen's layer_norm and gelu
    torch.testing.assert_close(ours.forward_gelu(strided), F.gelu(ref(strided)))


def test_layer_norm_gelu_bad_input_is_named():
    with pytest.raises(RuntimeError, match="derivative=True needs float32 or float64"):
        torch.ops.ops_dcnv3.layer_norm_gelu_last(torch.randn(3, 8).bfloat16(), None, None, 1e-5, True)
    with pytest.raises(RuntimeError, match="layer_norm_gelu_last: weight and bias must be 1-D of 8"):
        torch.ops.ops_dcnv3.layer_norm_gelu_last(torch.randn(3, 8), torch.ones(7), None, 1e-5, False)
    x = torch.randn(4, 8)
    stats = torch.ops.ops_dcnv3.layer_norm_last(x, None, None, 1e-5)
    with pytest.raises(RuntimeError, match="grad_scale must match the input"):
        torch.ops.ops_dcnv3.layer_norm_last_backward(torch.randn(4, 8), x, stats[1], stats[2], None,
                                                     torch.ones(4, 7))


def test_dcnv3_depthwise_path_fuses_and_keeps_hooks(monkeypatch):
    """DCNv3's dw_conv (conv, LayerNorm, GELU) takes forward_gelu: the same values and
    gradients as calling the Sequential; a hook on it or on its norm/activation sees
    its call (the Sequential runs instead)."""
    from ops_dcnv3.modules import DCNv3

    torch.manual_seed(0)
    module = DCNv3(channels=32, group=4)
    x = torch.randn(2, 6, 5, 32, requires_grad=True)
    fused_calls = []
    original = LayerNorm.forward_gelu

    def spy(self, t):
        fused_calls.append(t.shape)
        return original(self, t)

    monkeypatch.setattr(LayerNorm, "forward_gelu", spy)
    fused = module._depthwise(x)
    assert len(fused_calls) == 1
    plain = module.dw_conv(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=2e-6)
    grad = torch.randn_like(plain)
    (g_fused,) = torch.autograd.grad(fused, x, grad)
    (g_plain,) = torch.autograd.grad(plain, x, grad)
    torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-5)
    for watched in (module.dw_conv, module.dw_conv[1][1], module.dw_conv[2]):
        seen = []
        handle = watched.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out.shape))
        try:
            module(x)
        finally:
            handle.remove()
        assert len(seen) == 1 and len(fused_calls) == 1  # the hook fired; no fused call

