"""ops_dcnv3's depthwise convolution kernels on channels-last activations (DCNv3's dw_conv):
depthwise_conv_last and its backward against ATen's conv2d and autograd, the fused
inference path depthwise_layer_norm_gelu_last against conv, LayerNorm and an erfc GELU,
every CPU code path, fuzzed shapes, bad input, and the DCNv3 module's use of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules.layers import depthwise_conv_last

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 C++ kernels not built")

TOLERANCE = {torch.float64: 1e-12, torch.float32: 3e-5}
# (N, H, W, C), k: channel counts with and without a remainder past the widest vector,
# images smaller than the kernel, k = 1 (no padding) to 7.
SHAPES = [((2, 5, 7, 64), 3), ((1, 9, 4, 19), 5), ((3, 1, 1, 8), 3), ((1, 3, 3, 33), 1),
          ((2, 6, 6, 48), 7), ((1, 2, 9, 512), 3), ((2, 4, 5, 3), 3)]


def _inputs(shape, k, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    channels = shape[-1]
    draw = lambda *size: torch.randn(*size, generator=gen, dtype=torch.float64).to(dtype)  # noqa: E731
    return draw(*shape), draw(channels, 1, k, k), draw(channels), draw(channels), draw(channels)


def _conv(x, weight, bias):
    k = weight.shape[-1]
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=(k - 1) // 2,
                    groups=x.shape[-1]).permute(0, 2, 3, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape, k", SHAPES)
def test_convolution_and_gradients_match_aten(monkeypatch, cpu_isas, dtype, shape, k):
    x, weight, bias, _, _ = _inputs(shape, k, dtype, seed=shape[-1] + k)
    leaves = [t.double().requires_grad_() for t in (x, weight, bias)]
    ref = _conv(*leaves)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, leaves, grad)
    tol = TOLERANCE[dtype]
    for isa in cpu_isas:  # every CPU code path (DCNV3_CPU_ISA)
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        for with_bias in (True, False):
            out = torch.ops.ops_dcnv3.depthwise_conv_last(x, weight, bias if with_bias else None)
            assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
            expected = ref if with_bias else ref - bias.double()
            torch.testing.assert_close(out.double(), expected.detach(), rtol=tol, atol=tol * 8)
        grads = torch.ops.ops_dcnv3.depthwise_conv_last_backward(grad.to(dtype), x, weight)
        for got, want in zip(grads, ref_grads):
            assert got.dtype == dtype and got.shape == want.shape
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 8 * scale)


def test_gradcheck_float64_and_thread_independent_weight_gradients():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6).double()
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_apply, (x, conv.weight, conv.bias))
    x, weight, _, _, _ = _inputs((4, 28, 28, 128), 3, torch.float32)
    grad = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(torch.ops.ops_dcnv3.depthwise_conv_last_backward(grad, x, weight))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def _apply(x, weight, bias):
    from ops_dcnv3.modules.layers import _DepthwiseConvLast

    return _DepthwiseConvLast.apply(x, weight, bias)


def test_module_function_trains_like_conv2d_and_falls_back():
    """depthwise_conv_last(x, conv): the kernel and its autograd where it serves (values and
    gradients of conv2d on the channels-first view), conv itself otherwise (stride 2)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
    x = torch.randn(2, 6, 5, 32, requires_grad=True)
    out = depthwise_conv_last(x, conv)
    assert out.grad_fn is not None and "DepthwiseConvLast" in type(out.grad_fn).__name__
    ref = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    conv.stride = (2, 2)
    strided = depthwise_conv_last(x, conv)
    assert strided.shape == (2, 3, 3, 32) and "DepthwiseConvLast" not in type(strided.grad_fn).__name__


def test_layer_norm_gelu_fused_matches_the_composition(monkeypatch, cpu_isas):
    for dtype in (torch.float64, torch.float32):
        for shape, k in SHAPES:
            x, weight, bias, norm_w, norm_b = _inputs(shape, k, dtype, seed=shape[-1] * k)
            for params in ((bias, norm_w, norm_b), (None, None, None)):
                conv = _conv(x.double(), weight.double(), None if params[0] is None else params[0].double())
                affine = [None if p is None else p.double() for p in params[1:]]
                norm = F.layer_norm(conv, shape[-1:], *affine, 1e-6)
                ref = norm * 0.5 * torch.special.erfc(-norm / 2**0.5)
                tol = TOLERANCE[dtype]
                for isa in cpu_isas:
                    monkeypatch.setenv("DCNV3_CPU_ISA", isa)
                    out = torch.ops.ops_dcnv3.depthwise_layer_norm_gelu_last(x, weight, *params, 1e-6)
                    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
                    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 8)


def test_bad_input_is_named():
    fused = torch.ops.ops_dcnv3.depthwise_layer_norm_gelu_last
    conv = torch.ops.ops_dcnv3.depthwise_conv_last
    backward = torch.ops.ops_dcnv3.depthwise_conv_last_backward
    x, w = torch.randn(1, 4, 4, 8), torch.randn(8, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r"depthwise_conv_last: input must be \(N, H, W, C\)"):
        conv(torch.randn(4, 4, 8), w, None)
    with pytest.raises(RuntimeError, match=r"conv_weight must be \(C, 1, k, k\) with C = 8 and k odd"):
        fused(x, torch.randn(8, 1, 2, 2), None, None, None, 1e-6)
    with pytest.raises(RuntimeError, match=r"conv_weight must be \(C, 1, k, k\) with C = 8"):
        conv(x, torch.randn(7, 1, 3, 3), None)
    with pytest.raises(RuntimeError, match="conv_bias, weight and bias must be 1-D of 8"):
        fused(x, w, None, torch.ones(7), None, 1e-6)
    with pytest.raises(RuntimeError, match="depthwise_conv_last: bias must be 1-D of 8"):
        conv(x, w, torch.ones(8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input must be float64 or float32"):
        conv(x.bfloat16(), w.bfloat16(), None)
    with pytest.raises(RuntimeError, match="conv_weight must be Float"):
        conv(x, w.double(), None)
    with pytest.raises(RuntimeError, match="depthwise_conv_last_backward: grad_output must match"):
        backward(torch.randn(1, 4, 4, 7), x, w)


def test_dcnv3_depthwise_path_takes_the_kernels(monkeypatch):
    """DCNv3's dw_conv: CPU inference runs depthwise_layer_norm_gelu_last (the Sequential's
    values); training runs depthwise_conv_last then the LayerNorm + GELU kernel (the
    Sequential's values and gradients); a hook on the convolution, or a convolution the
    kernels do not cover (stride 2), keeps the Sequential's calls."""
    from ops_dcnv3.modules import DCNv3

    torch.manual_seed(0)
    module = DCNv3(channels=32, group=4)
    x = torch.randn(2, 6, 5, 32, requires_grad=True)
    calls = []
    for name in ("depthwise_layer_norm_gelu_last", "depthwise_conv_last"):
        kernel = getattr(torch.ops.ops_dcnv3, name)
        spy = lambda *a, name=name, kernel=kernel: calls.append(name) or kernel(*a)  # noqa: E731
        monkeypatch.setattr(torch.ops.ops_dcnv3, name, spy, raising=False)
    with torch.inference_mode():
        fused = module._depthwise(x.detach())
        assert calls == ["depthwise_layer_norm_gelu_last"]
        plain = module.dw_conv(x.detach().permute(0, 3, 1, 2))
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=2e-6)
    calls.clear()
    trained = module._depthwise(x)
    assert calls == ["depthwise_conv_last"]
    plain = module.dw_conv(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(trained, plain, rtol=1e-5, atol=2e-6)
    grad = torch.randn_like(plain)
    params = [x, *module.dw_conv.parameters()]
    for g, w in zip(torch.autograd.grad(trained, params, grad), torch.autograd.grad(plain, params, grad)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    calls.clear()
    handle = module.dw_conv[0].register_forward_hook(lambda *a: None)
    with torch.inference_mode():
        module._depthwise(x.detach())
    module._depthwise(x)
    handle.remove()
    module.dw_conv[0].stride = (2, 2)
    with torch.inference_mode():
        module._depthwise(x.detach())
    assert calls == []


@pytest.mark.parametrize("shape", [(0, 4, 4, 8), (2, 0, 4, 8), (2, 4, 0, 8)])
def test_empty_input_gives_empty_output_and_zero_parameter_gradients(shape):
    x, weight, bias, norm_w, norm_b = _inputs(shape, 3, torch.float32)
    out = torch.ops.ops_dcnv3.depthwise_conv_last(x, weight, bias)
    fused = torch.ops.ops_dcnv3.depthwise_layer_norm_gelu_last(x, weight, bias, norm_w, norm_b, 1e-6)
    assert out.shape == fused.shape == x.shape
    grad_x, grad_w, grad_b = torch.ops.ops_dcnv3.depthwise_conv_last_backward(torch.zeros(shape), x, weight)
    assert grad_x.shape == x.shape and not grad_w.any() and not grad_b.any()
    assert grad_w.shape == weight.shape and grad_b.shape == bias.shape
