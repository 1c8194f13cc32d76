"""ops_dcnv3's CPU GELU kernels (with the derivative for training, in place for
inference) and the fused linear+GELU that InternImage's MLP trains through: values
against an erfc reference in float64 (every CPU code path), the gradients against the
plain F.linear + F.gelu path, the fallbacks and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules import layers

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 C++ kernels not built")


def _reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU and its derivative in float64 through erfc (torch's float64 gelu, 1 + erf,
    loses the relative precision of the negative tail)."""
    x = x.double()
    cdf = 0.5 * torch.special.erfc(-x / math.sqrt(2))
    return x * cdf, cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _values():
    grid = torch.linspace(-16, 16, 64001, dtype=torch.float64)
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 12.6, -12.6, -12.7, 30.0, -30.0], dtype=torch.float64)
    noise = torch.randn(5003, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    return torch.cat([grid, noise, special])


def test_float32_kernel_matches_erfc_reference(monkeypatch, cpu_isas):
    x32 = _values().float()  # 69013 values: every vector width sees a tail block
    ref_y, ref_d = _reference(x32)
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        x = x32.clone()
        y = torch.ops.ops_dcnv3.gelu_with_derivative_(x)
        assert y.dtype == torch.float32 and y.shape == x.shape
        # relative precision on the negative tail too: 1e-6 down to x = -5, then growing with
        # the float32 rounding of x^2 / 2 inside exp (4e-6 at -12; ATen's float32 GELU, via
        # 1 + erf, returns 0 from about -5.5 on). The tail beyond -12.65 (|y| < 1e-35) is 0.
        torch.testing.assert_close(y.double(), ref_y, rtol=5e-6, atol=1e-35)
        near = x32 >= -5
        torch.testing.assert_close(y.double()[near], ref_y[near], rtol=1e-6, atol=1e-37)
        torch.testing.assert_close(x.double(), ref_d, rtol=5e-6, atol=2e-7)


def test_float64_kernel_and_non_finite_values():
    x = _values()
    ref_y, ref_d = _reference(x)
    y = torch.ops.ops_dcnv3.gelu_with_derivative_(x.clone())
    torch.testing.assert_close(y, ref_y, rtol=1e-12, atol=1e-300)
    special = torch.tensor([float("nan"), float("inf"), float("-inf")])
    y = torch.ops.ops_dcnv3.gelu_with_derivative_(special.clone())
    assert y[0].isnan() and y[1] == float("inf")
    assert F.gelu(torch.tensor(float("-inf"))).isnan() == y[2].isnan()  # ATen's value at -inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_bias_is_added_per_column_before_the_gelu(monkeypatch, cpu_isas, dtype):
    # 37 columns: every vector width ends each row in a tail block
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(53, 37, generator=gen, dtype=torch.float64) * 3).to(dtype)
    bias = (torch.randn(37, generator=gen, dtype=torch.float64) * 2).to(dtype)
    ref_y, ref_d = _reference(x.double() + bias.double())
    tolerance = dict(rtol=1e-12, atol=1e-300) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for isa in cpu_isas if dtype == torch.float32 else ["default"]:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        pre = x.clone()
        y = torch.ops.ops_dcnv3.gelu_with_derivative_(pre, bias)
        torch.testing.assert_close(y.double(), ref_y, **tolerance)
        torch.testing.assert_close(pre.double(), ref_d, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_in_place_gelu_matches_erfc_reference(monkeypatch, cpu_isas, dtype, with_bias):
    """bias_gelu_ overwrites its input with GELU(input + bias) and returns that tensor."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(53, 37, generator=gen, dtype=torch.float64) * 4).to(dtype)  # tail blocks per row
    bias = (torch.randn(37, generator=gen, dtype=torch.float64) * 2).to(dtype) if with_bias else None
    ref_y, _ = _reference(x.double() + (bias.double() if with_bias else 0))
    tolerance = dict(rtol=1e-12, atol=1e-300) if dtype == torch.float64 else dict(rtol=5e-6, atol=1e-6)
    for isa in cpu_isas if dtype == torch.float32 else ["default"]:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        pre = x.clone()
        y = torch.ops.ops_dcnv3.bias_gelu_(pre, bias)
        assert y.data_ptr() == pre.data_ptr() and y.shape == x.shape
        torch.testing.assert_close(y.double(), ref_y, **tolerance)
    # the same values as the training kernel's GELU
    torch.testing.assert_close(torch.ops.ops_dcnv3.bias_gelu_(x.clone(), bias),
                               torch.ops.ops_dcnv3.gelu_with_derivative_(x.clone(), bias), rtol=0, atol=0)


@pytest.mark.parametrize("op", ["gelu_with_derivative_", "bias_gelu_"])
def test_bad_input_is_named(op):
    kernel = getattr(torch.ops.ops_dcnv3, op)
    with pytest.raises(RuntimeError, match=f"{op}: bias must have one value per entry of input's last axis"):
        kernel(torch.ones(4, 6), torch.ones(4))
    with pytest.raises(RuntimeError, match=f"{op}: bias must match input's dtype"):
        kernel(torch.ones(4, 6), torch.ones(6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=f"{op}: input must be float32 or float64"):
        kernel(torch.ones(4, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=f"{op}: input must be contiguous"):
        kernel(torch.ones(4, 6).t())


@pytest.mark.parametrize("bias", [True, False])
def test_fused_training_linear_matches_plain_gradients(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(2, 5, 3, 24, requires_grad=True)
    assert layers._gelu_kernel_trains(x, layer)
    out = layers.linear(x, layer, gelu=True)
    assert out.grad_fn.name().startswith("_LinearGELU")
    grad = torch.randn(out.shape)
    out.backward(grad)
    ours = [t.grad.clone() for t in (x, layer.weight, layer.bias) if t is not None]
    for t in (x, layer.weight, layer.bias):
        if t is not None:
            t.grad = None
    plain = F.gelu(F.linear(x, layer.weight, layer.bias))
    torch.testing.assert_close(out, plain, rtol=2e-6, atol=2e-6)
    plain.backward(grad)
    theirs = [t.grad for t in (x, layer.weight, layer.bias) if t is not None]
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_training_linear_gradcheck_float64():
    layer = torch.nn.Linear(6, 9).double()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: layers._LinearGELU.apply(x, w, b),
                                    (x, layer.weight, layer.bias))


def test_plain_path_where_the_kernel_does_not_train():
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        assert not layers._gelu_kernel_trains(x, layer)
    frozen = torch.nn.Linear(8, 16).requires_grad_(False)
    assert not layers._gelu_kernel_trains(torch.randn(3, 8), frozen)  # nothing wants a gradient
    assert not layers._gelu_kernel_trains(x, torch.nn.Linear(8, 16).double())  # dtype mismatch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = layer

        def forward(self, t):
            return layers.linear(t, self.fc, gelu=True)

    traced = torch.jit.trace(Block(), (x,))
    assert "aten::gelu" in str(traced.graph)  # tracing keeps ATen's op
