"""The compiled multi-scale deformable attention CPU kernel against the grid_sample
reference (mmcv's ``multi_scale_deformable_attn_pytorch``): forward and all three gradients,
float64 and float32, bfloat16 with a tolerance, over 1-4 levels, odd level sizes, points
outside, head_dim 1/8/32/33; NaN propagation as grid_sample; gradcheck; a small fuzz."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msda_cases import (
    GRAD_NAMES,
    Case,
    assert_kernel_matches_reference,
    differentiable,
    mmcv_reference,
    reference,
)

from ops_dcnv3.msda import kernel_available, multi_scale_deformable_attn_reference

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 MSDA kernel not built")

ONE = ((5, 7),)
FOUR = ((9, 11), (5, 6), (3, 3), (1, 2))
GRID = [
    Case(levels=((1, 1),), head_dim=1, heads=1),
    Case(levels=ONE),
    Case(levels=((5, 7), (3, 4))),
    Case(levels=((7, 5), (4, 3), (2, 2)), points=4),
    Case(levels=FOUR, points=4, heads=3),
    Case(levels=FOUR, head_dim=32, points=2),
    Case(levels=((3, 5), (2, 1)), head_dim=33),
    Case(levels=((6, 4),), head_dim=1, heads=4),
    Case(spread=0.0),  # (almost) every point inside
    Case(spread=3.0, levels=((3, 3), (2, 4))),  # most points outside
    Case(batch=1, queries=1, heads=1, points=1),
    Case(batch=3, im2col_step=2),  # batch not divisible by im2col_step
    Case(head_dim=70, levels=((4, 5),)),  # every vector width and a scalar tail
    # more samples than keys: the backward packs each head's rows (heads > 1), general and
    # 32-channel loops
    Case(queries=60, heads=3, levels=((5, 7), (3, 4))),
    Case(queries=40, heads=2, head_dim=32, levels=ONE, points=4, spread=0.5),
]


def _id(case: Case) -> str:
    return (
        f"b{case.batch}-q{case.queries}-h{case.heads}x{case.head_dim}-L{len(case.levels)}"
        f"-{'_'.join(f'{h}x{w}' for h, w in case.levels)}-p{case.points}-s{case.spread}"
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", GRID, ids=_id)
def test_matches_reference(case: Case, dtype):
    assert_kernel_matches_reference(case, dtype)


@pytest.mark.parametrize("queries", [3, 40], ids=["strided", "packed"])
@pytest.mark.parametrize("head_dim", [1, 8, 32, 33])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_every_cpu_code_path(cpu_isas, monkeypatch, head_dim, dtype, queries):
    """Each ISA variant (baseline, AVX2, AVX-512), each head_dim tail length, and the backward
    on value's strided rows and on packed ones (more samples than keys)."""
    case = Case(head_dim=head_dim, levels=((4, 5), (3, 2)), queries=queries)
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        assert_kernel_matches_reference(case, dtype)


def test_our_reference_is_mmcvs():
    """Our grid_sample reference equals mmcv's function, outputs and gradients, to 1e-10."""
    mmcv_function = mmcv_reference()
    if mmcv_function is None:
        pytest.skip("mmcv is not installed")
    case = Case(levels=FOUR, points=4, spread=0.5)
    inputs = case.inputs()
    value, shapes, _, loc, weights = inputs
    ours = multi_scale_deformable_attn_reference(value, shapes, loc, weights)
    theirs = mmcv_function(value, shapes, loc, weights)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)
    grad = torch.randn(ours.shape, dtype=torch.float64)
    for name, a, b in zip(
        GRAD_NAMES,
        torch.autograd.grad(ours, differentiable(inputs), grad),
        torch.autograd.grad(theirs, differentiable(inputs), grad),
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision(dtype, isa, cpu_isas, monkeypatch):
    """Half types accumulate in float32: compare with the float32 kernel on the same
    (rounded) values, so only rounding of the result differs."""
    if isa not in cpu_isas:
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("DCNV3_CPU_ISA", isa)
    case = Case(head_dim=21, levels=((5, 7), (3, 4)))  # wide, narrow and scalar channel steps
    inputs = case.inputs(dtype)
    inputs32 = [t.detach().float().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out = case.kernel_call(*inputs)
    out32 = case.kernel_call(*inputs32)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=2e-2)
    grad = torch.randn(out.shape)
    got = torch.autograd.grad(out, differentiable(inputs), grad.to(dtype))
    want = torch.autograd.grad(out32, differentiable(inputs32), grad)
    for name, a, b in zip(GRAD_NAMES, got, want):
        assert a.dtype == dtype, name
        torch.testing.assert_close(a.float(), b, atol=2e-2 * b.abs().max().item(), rtol=2e-2, msg=name)


@pytest.mark.parametrize(
    "case",
    [
        Case(batch=1, queries=3, levels=((3, 4), (2, 3)), head_dim=3),
        Case(batch=2, queries=2, heads=2, levels=((4, 3),), head_dim=2, points=2, spread=0.6),
    ],
)
def test_gradcheck(case: Case):
    value, shapes, starts, loc, weights = case.inputs(torch.float64)
    assert torch.autograd.gradcheck(
        lambda v, x, w: case.kernel_call(v, shapes, starts, x, w), (value, loc, weights), eps=1e-6, atol=1e-5
    )


def _nan_inputs():
    case = Case(levels=((5, 7), (3, 4)), queries=4, heads=2, head_dim=5)
    value, shapes, starts, loc, weights = case.inputs(requires_grad=False)
    loc[0, 0, 0, 0, 0, 0] = math.nan  # x NaN
    loc[0, 1, 1, 1, 2, 1] = math.inf  # y inf
    loc[1, 2, 0, 0, 1] = torch.tensor([-math.inf, math.nan], dtype=loc.dtype)
    loc[1, 3, 1, 1, 0, 0] = 1e30  # finite, far outside: no NaN
    weights[1, 0, 1, 0, 0] = math.nan
    value[0, 3, 1, 2] = math.nan  # a key some points read
    value[1, 40, 0, 0] = math.inf
    return case, [
        t.requires_grad_() if t.is_floating_point() else t for t in (value, shapes, starts, loc, weights)
    ]


def test_non_finite_inputs_propagate_like_grid_sample():
    """NaN/inf in locations, weights or value: output and every gradient are NaN exactly
    where the grid_sample reference has NaN (a diverging run is not hidden)."""
    case, inputs = _nan_inputs()
    out = case.kernel_call(*inputs)
    assert out.isnan().any()
    assert_kernel_matches_reference(case, torch.float64, equal_nan=True, inputs=inputs)


def test_deterministic_backward():
    case = Case(batch=2, heads=4, head_dim=16, queries=40, levels=((8, 8), (4, 4)), spread=0.2)
    inputs = case.inputs(torch.float32)
    grad = torch.randn(case.batch, case.queries, case.heads * case.head_dim)
    first = torch.autograd.grad(case.kernel_call(*inputs), differentiable(inputs), grad)
    second = torch.autograd.grad(case.kernel_call(*inputs), differentiable(inputs), grad)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_multithreaded_backward_equals_single_thread():
    """Parallel tasks write disjoint grad_value slices: any thread count, same bits."""
    case = Case(batch=2, heads=4, head_dim=8, queries=30, levels=((6, 6), (3, 3)))
    inputs = case.inputs(torch.float32)
    grad = torch.randn(case.batch, case.queries, case.heads * case.head_dim)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.autograd.grad(case.kernel_call(*inputs), differentiable(inputs), grad)
        torch.set_num_threads(2)
        multi = torch.autograd.grad(case.kernel_call(*inputs), differentiable(inputs), grad)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert torch.equal(a, b)


def test_non_contiguous_inputs_and_int32_level_table():
    case = Case()
    value, shapes, starts, loc, weights = case.inputs(requires_grad=False)
    expected = case.reference_call(value, shapes, starts, loc, weights)
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    loc_nc = torch.cat([loc, loc], dim=-1)[..., :2]
    weights_nc = weights.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or weights_nc.is_contiguous())
    out = case.kernel_call(value_nc, shapes.int(), starts.int(), loc_nc, weights_nc)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("batch, queries", [(0, 5), (2, 0)])
def test_empty_batch_or_queries(batch, queries):
    case = Case(batch=batch, queries=queries)
    inputs = case.inputs()
    out = case.kernel_call(*inputs)
    assert out.shape == (batch, queries, case.heads * case.head_dim)
    assert case.reference_call(*inputs).shape == out.shape
    grads = torch.autograd.grad(out.sum(), differentiable(inputs), allow_unused=True)
    assert grads[0] is None or torch.equal(grads[0], torch.zeros_like(inputs[0]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 2),
    queries=st.integers(1, 6),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 40),
    levels=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4),
    points=st.integers(1, 4),
    spread=st.sampled_from([0.0, 0.2, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_against_reference(batch, queries, heads, head_dim, levels, points, spread, seed):
    case = Case(
        batch=batch,
        queries=queries,
        heads=heads,
        head_dim=head_dim,
        levels=tuple(levels),
        points=points,
        spread=spread,
    )
    assert_kernel_matches_reference(case, torch.float64, seed=seed)


def test_reference_half_precision():
    """The reference itself runs float16/bfloat16 (computed in float32 internally)."""
    case = Case()
    value, shapes, starts, loc, weights = case.inputs(torch.float32, requires_grad=False)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = [t.to(dtype) for t in (value, loc, weights)]
        expected = reference(*(t.float() for t in rounded[:1]), shapes, *(t.float() for t in rounded[1:]))
        out = multi_scale_deformable_attn_reference(rounded[0], shapes, *rounded[1:])
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=2e-2)
