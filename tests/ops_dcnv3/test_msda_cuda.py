"""Multi-scale deformable attention CUDA kernels: compiled whenever a toolkit is present (no
GPU needed to build), checked against the reference when a GPU is there; skips cleanly
without one."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from msda_cases import GRAD_NAMES, Case, assert_kernel_matches_reference, differentiable
from test_msda_kernel import _nan_inputs

from ops_dcnv3 import extension_available
from ops_dcnv3.msda import kernel_available


def _toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return os.path.exists(os.path.join(home, "bin", "nvcc")) or shutil.which("nvcc") is not None


@pytest.mark.skipif(not extension_available(), reason="ops_dcnv3 extension not built")
@pytest.mark.skipif(
    not _toolkit_present() or os.environ.get("WITH_CUDA") == "0",
    reason="no CUDA toolkit: CUDA kernels are not built",
)
def test_msda_cuda_kernels_were_compiled():
    """With a toolkit the build must include the MSDA CUDA kernels (registration is static,
    so this holds without a GPU)."""
    assert kernel_available("cuda")


needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and kernel_available("cuda")),
    reason="needs a CUDA GPU and the MSDA CUDA kernels",
)

GPU_GRID = [
    Case(),
    Case(levels=((9, 11), (5, 6), (3, 3), (1, 2)), points=4, heads=3, head_dim=32),
    Case(levels=((3, 5), (2, 1)), head_dim=33, spread=1.0),
    Case(levels=((1, 1),), head_dim=1, heads=1),
    Case(batch=3, im2col_step=2, head_dim=8),
]


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", GPU_GRID, ids=str)
def test_cuda_matches_reference(case, dtype):
    assert_kernel_matches_reference(case, dtype, device="cuda")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_half_precision(dtype):
    case = Case(levels=((12, 12), (6, 6)), heads=4, head_dim=16, queries=20)
    inputs = case.inputs(dtype, "cuda")
    inputs32 = [t.detach().float().requires_grad_() if t.is_floating_point() else t for t in inputs]
    out, out32 = case.kernel_call(*inputs), case.kernel_call(*inputs32)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=2e-2)
    grad = torch.randn(out.shape, device="cuda")
    got = torch.autograd.grad(out, differentiable(inputs), grad.to(dtype))
    want = torch.autograd.grad(out32, differentiable(inputs32), grad)
    for name, a, b in zip(GRAD_NAMES, got, want):
        torch.testing.assert_close(a.float(), b, atol=2e-2 * b.abs().max().item(), rtol=2e-2, msg=name)


@needs_gpu
def test_cuda_matches_cpu_kernel():
    case = Case(
        batch=2, queries=50, heads=8, head_dim=32, levels=((20, 30), (10, 15), (5, 8), (3, 4)), points=4
    )
    cpu_inputs = case.inputs(torch.float32)
    gpu_inputs = [t.detach().cuda().requires_grad_(t.requires_grad) for t in cpu_inputs]
    out_cpu, out_gpu = case.kernel_call(*cpu_inputs), case.kernel_call(*gpu_inputs)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
    grad = torch.randn(out_cpu.shape)
    for name, a, b in zip(
        GRAD_NAMES,
        torch.autograd.grad(out_gpu, differentiable(gpu_inputs), grad.cuda()),
        torch.autograd.grad(out_cpu, differentiable(cpu_inputs), grad),
    ):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4, msg=name)


@needs_gpu
def test_cuda_gradcheck():
    case = Case(batch=1, queries=3, levels=((3, 4), (2, 3)), head_dim=3)
    value, shapes, starts, loc, weights = case.inputs(torch.float64, "cuda")
    assert torch.autograd.gradcheck(
        lambda v, x, w: case.kernel_call(v, shapes, starts, x, w), (value, loc, weights), eps=1e-6, atol=1e-5
    )


@needs_gpu
def test_cuda_non_finite_inputs_propagate_like_grid_sample():
    case, inputs = _nan_inputs()
    inputs = [t.detach().cuda().requires_grad_(t.requires_grad) for t in inputs]
    assert_kernel_matches_reference(case, torch.float64, device="cuda", equal_nan=True, inputs=inputs)


@needs_gpu
def test_cuda_mmcv_module_uses_our_kernel_without_mmcv_cuda():
    """mmcv's module on CUDA runs (mmcv's own extension here has no CUDA kernels) and agrees
    with the grid_sample reference."""
    pytest.importorskip("mmcv")
    from mmcv.ops import MultiScaleDeformableAttention

    from dense_common import stack_compat
    from ops_dcnv3 import mmcv_msda

    stack_compat.apply()
    if mmcv_msda.mmcv_has_cuda_kernel():
        pytest.skip("mmcv's extension has its own CUDA kernel")
    torch.manual_seed(0)
    module = (
        MultiScaleDeformableAttention(
            embed_dims=32, num_heads=4, num_levels=2, num_points=2, batch_first=True
        )
        .cuda()
        .eval()
    )
    shapes = torch.tensor([[6, 7], [3, 4]], device="cuda")
    keys = 42 + 12
    query = torch.randn(2, 10, 32, device="cuda")
    value = torch.randn(2, keys, 32, device="cuda")
    ref_points = torch.rand(2, 10, 2, 2, device="cuda")
    out = module(
        query,
        value=value,
        reference_points=ref_points,
        spatial_shapes=shapes,
        level_start_index=torch.tensor([0, 42], device="cuda"),
    )
    with torch.no_grad():
        expected = module.cpu()(
            query.cpu(),
            value=value.cpu(),
            reference_points=ref_points.cpu(),
            spatial_shapes=shapes.cpu(),
            level_start_index=torch.tensor([0, 42]),
        )
    torch.testing.assert_close(out.detach().cpu(), expected, atol=1e-5, rtol=1e-5)
