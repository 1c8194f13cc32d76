"""CPU float32 training linears (layers._Linear, layers._product_nt) on either product
backend, oneDNN (AVX-512 CPUs) or ATen's (AVX2 only), against ATen's products in float64."""

import pytest
import torch
import torch.nn.functional as F

from ops_dcnv3.modules import layers


@pytest.fixture(params=[True, False], ids=["onednn", "aten"])
def onednn(request, monkeypatch):
    """Both float32 product backends, whichever this CPU takes by default."""
    if request.param and not layers._ONEDNN_LINEAR:
        pytest.skip("PyTorch built without oneDNN")
    monkeypatch.setattr(layers, "_ONEDNN_FLOAT32", request.param)
    return request.param


@pytest.mark.parametrize("transposed", [False, True])
def test_product_nt_matches_mm_with_strided_weight(onednn, transposed):
    torch.manual_seed(0)
    a = torch.randn(37, 24)
    b = torch.randn(24, 19).t() if transposed else torch.randn(19, 24)  # (19, 24) either way
    bias = torch.randn(19)
    expected = (a.double() @ b.double().t()) + bias.double()
    torch.testing.assert_close(layers._product_nt(a, b, bias).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layers._product_nt(a, b).double(), expected - bias.double(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("bias,residual,x_grad,w_grad", [
    (True, False, True, True), (False, False, True, True), (True, True, True, True),
    (True, False, False, True), (True, False, True, False)])
def test_training_linear_matches_float64(onednn, bias, residual, x_grad, w_grad):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias).requires_grad_(w_grad)
    x = torch.randn(2, 5, 3, 24, requires_grad=x_grad)
    res = torch.randn(2, 5, 3, 40) if residual else None
    assert layers._onednn_trains(x, layer) == onednn
    out = layers.linear(x, layer, residual=res)
    node = out.grad_fn.next_functions[1][0] if residual else out.grad_fn
    assert node.name().startswith("_Linear") == onednn  # else ATen's addmm/mm autograd
    grad = torch.randn(out.shape)
    out.backward(grad)

    params = [p for p in (layer.weight, layer.bias) if p is not None]
    x64 = x.detach().double().requires_grad_(x_grad)
    p64 = [p.detach().double().requires_grad_(w_grad) for p in params]
    expected = F.linear(x64, *p64) + (res.double() if residual else 0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    expected.backward(grad.double())
    for ours, theirs in [(x, x64)] + list(zip(params, p64)):
        if theirs.requires_grad:
            assert ours.grad.shape == ours.shape and ours.grad.is_contiguous()
            torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-5, atol=1e-4)
        else:
            assert ours.grad is None


def test_plain_training_path_elsewhere():
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(3, 8, requires_grad=True)
    assert not layers._onednn_trains(x.double(), layer.double())  # float64: ATen's products
    layer = torch.nn.Linear(8, 16)
    with torch.autocast("cpu", torch.bfloat16):
        assert not layers._onednn_trains(x, layer)
        assert layers.linear(x, layer).dtype == torch.bfloat16
    frozen = torch.nn.Linear(8, 16).requires_grad_(False)
    assert not layers._onednn_trains(torch.randn(3, 8), frozen)  # nothing wants a gradient
    with torch.no_grad():
        assert not layers._onednn_trains(x, layer)
    out = layers.linear(x.double(), torch.nn.Linear(8, 16).double())
    assert out.grad_fn.name() == "AddmmBackward0"
