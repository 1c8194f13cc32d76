"""Helpers for the DCNv3 tests: one place that builds a call's inputs and compares
the compiled kernel with the pure-PyTorch reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ops_dcnv3 import dcnv3, dcnv3_core_pytorch
from ops_dcnv3.validation import output_size


@dataclass(frozen=True)
class Case:
    n: int = 2
    h: int = 8
    w: int = 9
    group: int = 2
    group_channels: int = 4
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    offset_scale: float = 1.0
    remove_center: bool = False
    im2col_step: int = 64
    offset_range: float = 2.0  # offsets uniform in (-range, range); large pushes samples out
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def points(self) -> int:
        return self.kernel[0] * self.kernel[1] - int(self.remove_center)

    @property
    def out_hw(self) -> tuple[int, int]:
        return (output_size(self.h, self.kernel[0], self.stride[0], self.pad[0], self.dilation[0]),
                output_size(self.w, self.kernel[1], self.stride[1], self.pad[1], self.dilation[1]))

    def params(self) -> tuple:
        """kernel_h .. offset_scale, positionally, as both implementations take them."""
        return (self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], self.pad[0],
                self.pad[1], self.dilation[0], self.dilation[1], self.group,
                self.group_channels, self.offset_scale)

    def inputs(self, dtype=torch.float64, device="cpu", seed=0, requires_grad=True):
        gen = torch.Generator().manual_seed(seed)
        ho, wo = self.out_hw
        x = torch.randn(self.n, self.h, self.w, self.group * self.group_channels, generator=gen,
                        dtype=torch.float64)
        offset = (torch.rand(self.n, ho, wo, self.group * self.points * 2, generator=gen,
                             dtype=torch.float64) * 2 - 1) * self.offset_range
        mask = torch.rand(self.n, ho, wo, self.group * self.points, generator=gen, dtype=torch.float64)
        return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (x, offset, mask)]

    def kernel_call(self, x, offset, mask):
        return dcnv3(x, offset, mask, *self.params(), self.im2col_step, self.remove_center)

    def reference_call(self, x, offset, mask):
        return dcnv3_core_pytorch(x, offset, mask, *self.params(), self.remove_center)


TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-4, rtol=2e-4),
}


def assert_kernel_matches_reference(case: Case, dtype=torch.float64, device="cpu", seed=0):
    """Forward and the gradients of input, offset and mask agree with the reference."""
    tol = TOLERANCES[dtype]
    inputs = case.inputs(dtype, device, seed)
    out = case.kernel_call(*inputs)
    expected = case.reference_call(*inputs)
    assert out.shape == expected.shape == (case.n, *case.out_hw, case.group * case.group_channels)
    torch.testing.assert_close(out, expected, **tol, msg=lambda m: f"forward {case}: {m}")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1),
                       dtype=torch.float64).to(device=device, dtype=dtype)
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(expected, inputs, grad)
    for name, a, b in zip(("input", "offset", "mask"), got, want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"grad {name} {case}: {m}")
