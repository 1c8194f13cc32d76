"""NaN / inf semantics, one for every backend (dcnv3_sampling.h): a tap at a non-finite
location (NaN or +-inf offset) samples NaN, like the reference and PyTorch's grid_sample,
so a diverging run shows NaN instead of a finite loss. Its mask gradient is NaN, the
offset gradient of x is NaN when y is not finite (and the other way round), the input gets
nothing from it; a NaN mask multiplies even a tap outside the image (0 * NaN). (An
infinite mask, which the module's softmax cannot produce, gives a non-finite output: +-inf
in the reference, possibly NaN in the kernels, which sum per corner.) Every CPU code
path (DCNV3_CPU_ISA) in float64, float32 and bfloat16, forward and all three gradients,
against the reference."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from dcnv3_cases import Case

from ops_dcnv3 import kernel_available

CASE = Case(n=2, h=5, w=6, group=3, group_channels=21)  # wide, narrow and scalar channel steps
P = CASE.points
NAN, INF = float("nan"), float("inf")
# (n, oy, ox, group, point, coordinate 0=x 1=y, value): the last entry of a pixel (g 2, p 8)
# lands in a partial vector block of the CPU kernel
OFFSET_POISON = [
    (0, 0, 0, 0, 0, 0, NAN),
    (0, 1, 2, 1, 4, 1, INF),
    (0, 2, 3, 2, 8, 0, -INF),
    (1, 4, 5, 1, 2, 1, NAN),
]
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-4, rtol=2e-4),
    torch.bfloat16: dict(atol=5e-2, rtol=3e-2),
}
needs_kernel = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")


def _poisoned_inputs(dtype: torch.dtype, masks: bool):
    x, offset, mask = (t.detach().clone() for t in CASE.inputs(torch.float64, requires_grad=False))
    for n, oy, ox, g, p, coordinate, value in OFFSET_POISON:
        offset[n, oy, ox, (g * P + p) * 2 + coordinate] = value
    if masks:
        offset[1, 0, 0, (1 * P + 0) * 2] = 1e30  # far outside the image (finite) ...
        mask[1, 0, 0, 1 * P + 0] = NAN  # ... with a NaN mask: 0 * NaN
        offset[1, 3, 1, (0 * P + 3) * 2 + 1] = -1e30  # far outside, finite mask: 0
    return [t.to(dtype).requires_grad_() for t in (x, offset, mask)]


def _forward_and_grads(call, inputs):
    out = call(*inputs)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return (out, *torch.autograd.grad(out, inputs, grad.to(out.dtype)))


def _assert_same(got, want, dtype, what):
    for name, a, b in zip(("output", "grad_input", "grad_offset", "grad_mask"), got, want):
        assert torch.equal(a.isnan(), b.isnan()), f"{what} {name}: NaN where the reference has none or v.v."
        assert torch.equal(a.isinf(), b.isinf()), f"{what} {name}: inf pattern differs"
        finite = torch.isfinite(b)
        if dtype == torch.bfloat16 and name == "grad_offset":
            # bf16 offsets put some locations exactly on pixel edges, where the location
            # gradient jumps and the reference (through grid_sample's normalised grid) may
            # land on the other side: allow a few such taps
            close = torch.isclose(a[finite].float(), b[finite].float(), **TOLERANCES[dtype])
            assert close.float().mean() > 0.995, f"{what} {name}: {(~close).sum()} of {close.numel()} differ"
            continue
        torch.testing.assert_close(
            a[finite], b[finite], **TOLERANCES[dtype], msg=lambda m, n=name: f"{what} {n}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_reference_propagates_nan(dtype):
    """The ground truth itself: NaN exactly where a tap's location is not finite."""
    out, grad_input, grad_offset, grad_mask = _forward_and_grads(
        CASE.reference_call, _poisoned_inputs(dtype, False)
    )
    poisoned = torch.zeros(out.shape, dtype=torch.bool)
    slots = torch.zeros(grad_mask.shape, dtype=torch.bool)
    gc = CASE.group_channels
    for n, oy, ox, g, p, coordinate, _ in OFFSET_POISON:
        poisoned[n, oy, ox, g * gc : (g + 1) * gc] = True
        slots[n, oy, ox, g * P + p] = True
        # d/dx of the sample goes through the y fractions: the other coordinate's gradient is NaN
        assert grad_offset[n, oy, ox, (g * P + p) * 2 + 1 - coordinate].isnan()
        assert grad_offset[n, oy, ox, (g * P + p) * 2 + coordinate] == 0
    assert torch.equal(out.isnan(), poisoned)
    assert torch.equal(grad_mask.isnan(), slots)
    assert torch.isfinite(grad_input).all()  # the input gets nothing from a NaN tap


@needs_kernel
@pytest.mark.parametrize("masks", [False, True], ids=["offsets", "offsets+masks"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
def test_every_cpu_path_matches_the_reference(cpu_isas, monkeypatch, dtype, masks):
    inputs = _poisoned_inputs(dtype, masks)
    want = _forward_and_grads(CASE.reference_call, inputs)
    assert want[0].isnan().any()
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        for step in (1, 64):
            got = _forward_and_grads(dataclasses.replace(CASE, im2col_step=step).kernel_call, inputs)
            _assert_same(got, want, dtype, f"{isa} im2col_step={step}")


@needs_kernel
def test_nan_loss_is_visible_through_the_module(cpu_isas, monkeypatch):
    """A DCNv3 module whose offset layer diverged gives a NaN loss, on every CPU path."""
    from ops_dcnv3.modules.dcnv3 import DCNv3

    module = DCNv3(channels=16, group=2)
    with torch.no_grad():
        module.offset.bias[0] = NAN
    x = torch.randn(1, 4, 4, 16)
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        loss = module(x).square().mean()
        assert loss.isnan()
        loss.backward()
        assert module.offset.weight.grad.isnan().any()
        module.zero_grad()


@needs_kernel
def test_infinite_mask_gives_a_non_finite_output(cpu_isas, monkeypatch):
    x, offset, mask = (t.detach() for t in _poisoned_inputs(torch.float64, False))
    mask[1, 2, 2, 2 * P + 1] = INF
    gc = CASE.group_channels
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        out = CASE.kernel_call(x, offset, mask)
        assert not torch.isfinite(out[1, 2, 2, 2 * gc : 3 * gc]).any()
        assert torch.isfinite(out[1, 2, 2, : 2 * gc]).all()
