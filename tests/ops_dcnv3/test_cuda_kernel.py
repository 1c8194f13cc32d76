"""CUDA kernels: compiled whenever a toolkit is present (no GPU needed to build), and
checked against the reference when a GPU is there. Skips cleanly without one."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from dcnv3_cases import Case, assert_kernel_matches_reference

from ops_dcnv3 import extension_available, kernel_available


def _toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return os.path.exists(os.path.join(home, "bin", "nvcc")) or shutil.which("nvcc") is not None


@pytest.mark.skipif(not extension_available(), reason="ops_dcnv3 extension not built")
@pytest.mark.skipif(not _toolkit_present() or os.environ.get("WITH_CUDA") == "0",
                    reason="no CUDA toolkit: CUDA kernels are not built")
def test_cuda_kernels_were_compiled():
    """With a toolkit on the machine the build must include the CUDA kernels, so a CUDA
    compile error can never land (works without a GPU: registration is static)."""
    assert kernel_available("cuda")


needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and kernel_available("cuda")),
                               reason="needs a CUDA GPU and the CUDA kernels")

GPU_GRID = [
    Case(),
    Case(kernel=(5, 5), pad=(2, 2), group=4, group_channels=16),
    Case(kernel=(3, 5), pad=(1, 2), stride=(2, 1), dilation=(2, 1), offset_scale=2.0),
    Case(remove_center=True, group=3, group_channels=30),
    Case(group=1, group_channels=71, h=6, w=7, offset_range=8.0),
    Case(group=2, group_channels=128, h=5, w=5),
    Case(n=5, im2col_step=2),
]


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", GPU_GRID, ids=str)
def test_cuda_matches_reference(case, dtype):
    assert_kernel_matches_reference(case, dtype, device="cuda")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_half_precision(dtype):
    case = Case(group=4, group_channels=16, h=12, w=12)
    x, offset, mask = case.inputs(dtype, "cuda")
    x32, offset32, mask32 = (t.detach().float().requires_grad_() for t in (x, offset, mask))
    out, out32 = case.kernel_call(x, offset, mask), case.kernel_call(x32, offset32, mask32)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=2e-2)
    grad = torch.randn(out.shape, device="cuda")
    got = torch.autograd.grad(out, (x, offset, mask), grad.to(dtype))
    want = torch.autograd.grad(out32, (x32, offset32, mask32), grad)
    for name, a, b in zip(("input", "offset", "mask"), got, want):
        torch.testing.assert_close(a.float(), b, atol=2e-2 * b.abs().max().item(), rtol=2e-2, msg=name)


@needs_gpu
def test_cuda_matches_cpu_kernel():
    case = Case(n=2, h=20, w=20, group=4, group_channels=16, offset_range=3.0)
    cpu_inputs = case.inputs(torch.float32)
    gpu_inputs = [t.detach().cuda().requires_grad_() for t in cpu_inputs]
    torch.testing.assert_close(case.kernel_call(*gpu_inputs).cpu(), case.kernel_call(*cpu_inputs),
                               atol=1e-5, rtol=1e-5)


@needs_gpu
def test_cuda_gradcheck():
    case = Case(n=1, h=4, w=5, remove_center=True, offset_scale=2.0)
    inputs = case.inputs(torch.float64, "cuda")
    assert torch.autograd.gradcheck(lambda *t: case.kernel_call(*t), inputs, eps=1e-6, atol=1e-5)


@needs_gpu
def test_cuda_module_compile():
    from ops_dcnv3.modules import DCNv3

    module = DCNv3(channels=64, group=4).cuda()
    x = torch.randn(2, 14, 14, 64, device="cuda")
    compiled = torch.compile(module, fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x), atol=1e-4, rtol=1e-4)
