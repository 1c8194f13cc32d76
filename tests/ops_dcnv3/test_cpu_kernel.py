"""The compiled CPU kernel against the pure-PyTorch reference: forward and all three
gradients, float64 and float32, over the parameter grid of the operator."""

from __future__ import annotations

import pytest
import torch
from dcnv3_cases import TOLERANCES, Case, assert_kernel_matches_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_dcnv3 import dcnv3, dcnv3_core_pytorch, kernel_available

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")

# One axis at a time around a default case, plus combinations the models use.
GRID = [
    Case(kernel=(1, 1), pad=(0, 0)),
    Case(kernel=(3, 3)),
    Case(kernel=(5, 5), pad=(2, 2)),
    Case(kernel=(3, 5), pad=(1, 2)),
    Case(kernel=(5, 3), pad=(2, 1), h=7, w=6),
    Case(stride=(2, 2)),
    Case(stride=(2, 1), pad=(0, 2)),
    Case(pad=(0, 0)),
    Case(pad=(2, 2)),
    Case(dilation=(2, 2), pad=(2, 2)),
    Case(dilation=(2, 1), kernel=(3, 5), pad=(1, 0)),
    Case(offset_scale=2.0),
    Case(offset_scale=0.5, kernel=(5, 5), pad=(2, 2)),
    Case(remove_center=True),
    Case(remove_center=True, kernel=(5, 3), pad=(2, 1), offset_scale=2.0),
    Case(group=1, group_channels=1),
    Case(group=2, group_channels=16),
    Case(group=1, group_channels=30),
    Case(group=2, group_channels=71, h=5, w=6),
    Case(group=1, group_channels=128, h=5, w=5),
    Case(group=4, group_channels=16, stride=(2, 2), dilation=(2, 2), pad=(2, 2), remove_center=True),
    Case(n=5, im2col_step=2),  # batch not divisible by im2col_step
    Case(n=3, im2col_step=256),
    Case(offset_range=8.0),  # many samples leave the image
    Case(group=2, group_channels=16, offset_range=8.0),  # the same, fixed-width backward groups
    Case(offset_range=40.0, h=4, w=5),  # nearly all samples outside
    Case(h=1, w=1, pad=(1, 1)),
]


def _id(case: Case) -> str:
    return (f"n{case.n}-{case.h}x{case.w}-g{case.group}x{case.group_channels}-k{case.kernel}"
            f"-s{case.stride}-p{case.pad}-d{case.dilation}-os{case.offset_scale}"
            f"-rc{int(case.remove_center)}-or{case.offset_range}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", GRID, ids=_id)
def test_matches_reference(case: Case, dtype):
    assert_kernel_matches_reference(case, dtype)


@pytest.mark.parametrize("group_channels", [1, 8, 16, 30, 32, 71, 128])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_every_cpu_code_path(cpu_isas, monkeypatch, group_channels, dtype):
    """Each ISA variant (baseline, AVX2, AVX-512), each channel tail length, and the
    backward's fixed-width groups (16 and 32 channels)."""
    case = Case(group=2, group_channels=group_channels, h=6, w=7)
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        assert_kernel_matches_reference(case, dtype)


def test_unknown_isa_is_an_error(monkeypatch):
    monkeypatch.setenv("DCNV3_CPU_ISA", "sse9")
    x, offset, mask = Case().inputs()
    with pytest.raises(RuntimeError, match="DCNV3_CPU_ISA"):
        Case().kernel_call(x, offset, mask)


@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision(dtype, isa, cpu_isas, monkeypatch):
    """Half types accumulate in float32: compare with the float32 kernel on the same
    values (same sampling locations, so only rounding differs) and the reference."""
    if isa not in cpu_isas:
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("DCNV3_CPU_ISA", isa)
    case = Case(group=3, group_channels=21)  # wide, narrow and scalar channel steps
    x, offset, mask = case.inputs(dtype)
    x32, offset32, mask32 = (t.detach().float().requires_grad_() for t in (x, offset, mask))
    out = case.kernel_call(x, offset, mask)
    out32 = case.kernel_call(x32, offset32, mask32)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=2e-2)
    if dtype == torch.bfloat16:  # same float32 sums, one rounding: exactly the float32 result rounded
        assert torch.equal(out, out32.to(dtype))
    torch.testing.assert_close(out, case.reference_call(x, offset, mask), atol=3e-2, rtol=2e-2)
    grad = torch.randn(out.shape)
    got = torch.autograd.grad(out, (x, offset, mask), grad.to(dtype))
    want = torch.autograd.grad(out32, (x32, offset32, mask32), grad)
    for name, a, b in zip(("input", "offset", "mask"), got, want):
        assert a.dtype == dtype, name
        scale = b.abs().max().item()
        torch.testing.assert_close(a.float(), b, atol=2e-2 * scale, rtol=2e-2, msg=name)


@pytest.mark.parametrize("case", [Case(n=1, h=4, w=5), Case(n=2, h=4, w=4, kernel=(3, 5), pad=(1, 2),
                                                          stride=(2, 1), remove_center=True,
                                                          offset_scale=2.0, offset_range=3.0),
                                  Case(n=1, h=5, w=4, group=3, group_channels=3, dilation=(2, 2),
                                       pad=(2, 2), offset_range=4.0)])
def test_gradcheck(case: Case):
    inputs = case.inputs(torch.float64)
    assert torch.autograd.gradcheck(lambda *t: case.kernel_call(*t), inputs, eps=1e-6, atol=1e-5)


def test_non_contiguous_inputs():
    case = Case(group=2, group_channels=8)
    x, offset, mask = case.inputs(requires_grad=False)
    # Same values, other memory layouts.
    x_nc = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    offset_nc = torch.cat([offset, offset], dim=-1)[..., : offset.shape[-1]]
    mask_nc = mask.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (x_nc.is_contiguous() or offset_nc.is_contiguous() or mask_nc.is_contiguous())
    expected = case.reference_call(x, offset, mask)
    torch.testing.assert_close(case.kernel_call(x_nc, offset_nc, mask_nc), expected)


@pytest.mark.parametrize("case", [Case(group=2, group_channels=8),
                                  Case(n=1, h=1, w=5, group=3, group_channels=5),
                                  Case(n=3, h=4, w=1), Case(n=1, h=1, w=1, pad=(1, 1))],
                         ids=["2x8x9", "batch1-row", "column", "one-pixel"])
def test_pixel_major_mask(case: Case):
    """The mask layout DCNv3's transposed softmax produces, a (G*P, pixels) tensor viewed
    as (N, H, W, G*P), is read through its strides: same forward and gradients."""
    x, offset, mask = case.inputs()
    pixel_major = mask.detach().reshape(-1, mask.shape[-1]).t().contiguous().t().reshape(mask.shape)
    assert pixel_major.stride()[-1] == pixel_major.shape[:-1].numel() or pixel_major.shape[:-1].numel() == 1
    pixel_major.requires_grad_()
    out = case.kernel_call(x, offset, pixel_major)
    expected = case.reference_call(x, offset, mask)
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])
    grad = torch.randn(out.shape, dtype=out.dtype)
    got = torch.autograd.grad(out, (x, offset, pixel_major), grad)
    want = torch.autograd.grad(expected, (x, offset, mask), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])


def test_deterministic_backward():
    case = Case(n=2, group=4, group_channels=16, h=12, w=12, offset_range=3.0)
    inputs = case.inputs(torch.float32)
    grad = torch.randn(case.n, *case.out_hw, 64)
    first = torch.autograd.grad(case.kernel_call(*inputs), inputs, grad)
    second = torch.autograd.grad(case.kernel_call(*inputs), inputs, grad)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_empty_batch():
    case = Case(n=0)
    x, offset, mask = case.inputs()
    out = case.kernel_call(x, offset, mask)
    assert out.shape == (0, *case.out_hw, 8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), group=st.integers(1, 3),
    group_channels=st.integers(1, 20), kernel_h=st.integers(1, 5), kernel_w=st.integers(1, 5),
    stride_h=st.integers(1, 3), stride_w=st.integers(1, 3), pad_h=st.integers(0, 3),
    pad_w=st.integers(0, 3), dilation_h=st.integers(1, 3), dilation_w=st.integers(1, 3),
    offset_scale=st.sampled_from([0.5, 1.0, 2.0, 1.7]), remove_center=st.booleans(),
    offset_range=st.sampled_from([0.0, 1.0, 3.0, 10.0]), im2col_step=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_fuzz_against_reference(n, h, w, group, group_channels, kernel_h, kernel_w, stride_h,
                                stride_w, pad_h, pad_w, dilation_h, dilation_w, offset_scale,
                                remove_center, offset_range, im2col_step, seed):
    if remove_center and (kernel_h % 2 == 0 or kernel_w % 2 == 0):
        remove_center = False
    if remove_center and kernel_h * kernel_w == 1:
        remove_center = False  # a 1x1 kernel without its centre has no taps
    case = Case(n=n, h=h, w=w, group=group, group_channels=group_channels, kernel=(kernel_h, kernel_w),
                stride=(stride_h, stride_w), pad=(pad_h, pad_w), dilation=(dilation_h, dilation_w),
                offset_scale=offset_scale, remove_center=remove_center, offset_range=offset_range,
                im2col_step=im2col_step)
    ho, wo = case.out_hw
    if ho <= 0 or wo <= 0:
        x, offset, mask = torch.zeros(n, h, w, group * group_channels), torch.zeros(1), torch.zeros(1)
        with pytest.raises(ValueError, match="empty output"):
            dcnv3(x, offset.view(1, 1, 1, 1), mask.view(1, 1, 1, 1), *case.params(), im2col_step,
                  remove_center)
        return
    if offset_range == 0.0:
        # Zero offsets put taps exactly on pixel centres, where the bilinear gradient has a
        # kink; compare the forward only there.
        x, offset, mask = case.inputs(seed=seed)
        torch.testing.assert_close(case.kernel_call(x, offset, mask), case.reference_call(x, offset, mask))
        return
    assert_kernel_matches_reference(case, torch.float64, seed=seed)


def test_reference_half_precision_on_cpu():
    """The reference works in float16/bfloat16 (computed in float32 internally)."""
    case = Case(group=2, group_channels=8)
    x, offset, mask = case.inputs(torch.float32, requires_grad=False)
    expected = dcnv3_core_pytorch(x, offset, mask, *case.params(), False)
    for dtype in (torch.float16, torch.bfloat16):
        out = dcnv3_core_pytorch(x.to(dtype), offset.to(dtype), mask.to(dtype), *case.params(), False)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=3e-2)


def test_reference_empty_batch():
    case = Case(n=0)
    x, offset, mask = case.inputs(requires_grad=False)
    assert case.reference_call(x, offset, mask).shape == (0, *case.out_hw, 8)
