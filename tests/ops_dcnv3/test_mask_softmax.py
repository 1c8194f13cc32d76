"""ops_dcnv3's CPU mask softmax (DCNv3's modulation mask from transposed logits) and its
backward, against ATen's softmax: values and gradients in float64 and float32 on every CPU
code path and odd shapes, bfloat16 logits (a float32 mask), the module's use of it, the
fallbacks and bad input."""

from __future__ import annotations

import pytest
import torch

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules import DCNv3, DCNv3_pytorch
from ops_dcnv3.modules.layers import mask_softmax

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 C++ kernels not built")


def _reference(logits: torch.Tensor, group: int) -> torch.Tensor:
    rows = logits.shape[0]
    return logits.view(group, rows // group, -1).softmax(dim=1).view(rows, -1).t()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("group,points,pixels",
                         [(4, 9, 3136), (16, 9, 197), (3, 8, 7), (1, 25, 33), (2, 1, 17)])
def test_kernel_matches_aten(monkeypatch, cpu_isas, dtype, group, points, pixels):
    gen = torch.Generator().manual_seed(group * 100 + pixels)
    logits = (torch.randn(group * points, pixels, generator=gen, dtype=torch.float64) * 4).to(dtype)
    grad = torch.randn(pixels, group * points, generator=gen, dtype=torch.float64).to(dtype)
    ref_logits = logits.double().requires_grad_()
    ref = _reference(ref_logits, group)
    ref.backward(grad.double())
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        out = torch.ops.ops_dcnv3.mask_softmax(logits, group)
        assert out.shape == (pixels, group * points) and out.is_contiguous() and out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
        grad_logits = torch.ops.ops_dcnv3.mask_softmax_backward(grad, out, group)
        assert grad_logits.shape == logits.shape
        torch.testing.assert_close(grad_logits.double(), ref_logits.grad, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("group,points,pixels", [(4, 9, 3136), (3, 8, 7), (2, 1, 17)])
def test_bfloat16_logits_give_a_float32_mask(monkeypatch, cpu_isas, group, points, pixels):
    gen = torch.Generator().manual_seed(pixels)
    logits = (torch.randn(group * points, pixels, generator=gen) * 4).bfloat16()
    ref = _reference(logits.double(), group)  # the bfloat16 values, softmax in float64
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        out = torch.ops.ops_dcnv3.mask_softmax(logits, group)
        assert out.dtype == torch.float32 and out.shape == (pixels, group * points) and out.is_contiguous()
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    assert mask_softmax(logits, group).dtype == torch.float32  # the module's helper takes the kernel


def test_extreme_logits():
    logits = torch.tensor([[0.0, 1e30, float("-inf"), float("nan")],
                           [0.0, -1e30, float("-inf"), 0.0],
                           [0.0, 0.0, 0.0, 0.0]])  # one group of 3 points, 4 pixels
    out = torch.ops.ops_dcnv3.mask_softmax(logits, 1)
    ref = _reference(logits, 1)
    assert torch.equal(out.isnan(), ref.isnan())
    torch.testing.assert_close(out[:2], ref[:2])


def test_function_gradcheck_and_fallbacks():
    logits = torch.randn(2 * 9, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mask_softmax(t, 2), (logits,))
    for half in (torch.randn(18, 5).half(), torch.randn(18, 5).bfloat16().requires_grad_()):
        out = mask_softmax(half, 2)  # ATen's path: float16, or bfloat16 wanting a gradient
        assert out.dtype == half.dtype
        torch.testing.assert_close(out, _reference(half, 2).contiguous())
    traced = torch.jit.trace(lambda t: mask_softmax(t, 2), (logits.detach(),))
    assert "aten::softmax" in str(traced.graph)


def test_module_matches_the_reference_module():
    torch.manual_seed(0)
    ours = DCNv3(channels=32, group=4)
    ref = DCNv3_pytorch(channels=32, group=4)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.2)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 5, 32, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.mask.weight.grad, ref.mask.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.mask.bias.grad, ref.mask.bias.grad, rtol=1e-4, atol=1e-4)


def test_bad_input_is_named():
    with pytest.raises(RuntimeError, match="group must be >= 1 and divide the 18"):
        torch.ops.ops_dcnv3.mask_softmax(torch.randn(18, 4), 4)
    with pytest.raises(RuntimeError, match=r"logits must be \(group \* points, pixels\)"):
        torch.ops.ops_dcnv3.mask_softmax(torch.randn(18), 2)
    with pytest.raises(RuntimeError, match="logits must be float32, float64 or bfloat16"):
        torch.ops.ops_dcnv3.mask_softmax(torch.randn(18, 4).half(), 2)
    y = torch.ops.ops_dcnv3.mask_softmax(torch.randn(18, 4), 2)
    with pytest.raises(RuntimeError, match="grad_output must match the output"):
        torch.ops.ops_dcnv3.mask_softmax_backward(torch.randn(4, 17), y, 2)

