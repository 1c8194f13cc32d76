"""Checks shared by the DCNv3 and MSDA torch-integration tests."""

from __future__ import annotations

import torch


def assert_compiled_matches_eager(module: torch.nn.Module, x: torch.Tensor) -> None:
    """``torch.compile(fullgraph=True)`` of ``module`` gives eager's output and the same
    input and parameter gradients (aot_eager: traces the fake kernels and autograd). Up to
    float32 rounding: eager runs ops_dcnv3's LayerNorm kernel where the compiled graph keeps
    ATen's layer_norm."""
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = x.detach().clone().requires_grad_()
    x_eager = x.detach().clone().requires_grad_()
    out = compiled(x)
    expected = module(x_eager)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-4, atol=1e-4)
    for g, p in zip(grads, module.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4)
