"""Helpers for the multi-scale deformable attention tests: one place that builds a call's
inputs and compares the compiled kernel with the grid_sample reference (mmcv's
``multi_scale_deformable_attn_pytorch`` when mmcv is installed, else ours)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ops_dcnv3.msda import (
    level_start_index_of,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_reference,
)


def mmcv_reference():
    """mmcv's own grid_sample function (unwrapped if ops_dcnv3 patched it), or None."""
    try:
        from mmcv.ops import multi_scale_deform_attn
    except ImportError:
        return None
    function = multi_scale_deform_attn.multi_scale_deformable_attn_pytorch
    return getattr(function, "__wrapped__", function)


def reference(value, spatial_shapes, sampling_locations, attention_weights):
    function = mmcv_reference() or multi_scale_deformable_attn_reference
    return function(value, spatial_shapes, sampling_locations, attention_weights)


@dataclass(frozen=True)
class Case:
    batch: int = 2
    queries: int = 5
    heads: int = 2
    head_dim: int = 8
    levels: tuple[tuple[int, int], ...] = ((5, 7), (3, 4))
    points: int = 3
    spread: float = 0.3  # locations uniform in (-spread, 1 + spread): points fall outside
    im2col_step: int = 64

    @property
    def keys(self) -> int:
        return sum(h * w for h, w in self.levels)

    def inputs(self, dtype=torch.float64, device="cpu", seed=0, requires_grad=True):
        """value, spatial_shapes, level_start_index, sampling_locations, attention_weights."""
        gen = torch.Generator().manual_seed(seed)
        levels = len(self.levels)
        value = torch.randn(
            self.batch, self.keys, self.heads, self.head_dim, generator=gen, dtype=torch.float64
        )
        loc = (
            torch.rand(
                self.batch,
                self.queries,
                self.heads,
                levels,
                self.points,
                2,
                generator=gen,
                dtype=torch.float64,
            )
            * (1 + 2 * self.spread)
            - self.spread
        )
        weights = torch.rand(
            self.batch, self.queries, self.heads, levels, self.points, generator=gen, dtype=torch.float64
        )
        shapes = torch.tensor(self.levels, dtype=torch.long, device=device)
        value, loc, weights = (
            t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, loc, weights)
        )
        return value, shapes, level_start_index_of(shapes), loc, weights

    def kernel_call(self, value, shapes, starts, loc, weights):
        return multi_scale_deformable_attn(value, shapes, starts, loc, weights, self.im2col_step)

    def reference_call(self, value, shapes, starts, loc, weights):
        return reference(value, shapes, loc, weights)


TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-5, rtol=2e-4),
}
GRAD_NAMES = ("value", "sampling_locations", "attention_weights")


def differentiable(inputs):
    value, _, _, loc, weights = inputs
    return value, loc, weights


def assert_kernel_matches_reference(
    case: Case, dtype=torch.float64, device="cpu", seed=0, equal_nan=False, inputs=None
):
    """Forward and the gradients of value, sampling_locations and attention_weights agree."""
    tol = TOLERANCES[dtype]
    inputs = inputs if inputs is not None else case.inputs(dtype, device, seed)
    out = case.kernel_call(*inputs)
    expected = case.reference_call(*inputs)
    assert out.shape == expected.shape == (case.batch, case.queries, case.heads * case.head_dim)
    torch.testing.assert_close(
        out, expected, **tol, equal_nan=equal_nan, msg=lambda m: f"forward {case}: {m}"
    )
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(
        device=device, dtype=dtype
    )
    got = torch.autograd.grad(out, differentiable(inputs), grad)
    want = torch.autograd.grad(expected, differentiable(inputs), grad)
    for name, a, b in zip(GRAD_NAMES, got, want):
        torch.testing.assert_close(
            a, b, **tol, equal_nan=equal_nan, msg=lambda m, name=name: f"grad {name} {case}: {m}"
        )
