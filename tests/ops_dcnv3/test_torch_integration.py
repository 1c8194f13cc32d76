"""The operator is a first-class torch op: opcheck, torch.compile(fullgraph=True) and
torch.export trace through it."""

from __future__ import annotations

import pytest
import torch
from compile_checks import assert_compiled_matches_eager
from dcnv3_cases import Case

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules import DCNv3

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")


@pytest.mark.parametrize("case", [
    Case(group=2, group_channels=4),
    Case(n=1, group=1, group_channels=3, kernel=(3, 5), pad=(1, 2), stride=(2, 1), remove_center=True,
         offset_scale=2.0),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck(case, dtype):
    x, offset, mask = case.inputs(dtype)
    args = (x, offset, mask, *case.params(), case.im2col_step, case.remove_center)
    torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3.default, args)


def test_opcheck_non_contiguous():
    case = Case(group=2, group_channels=4)
    x, offset, mask = case.inputs(requires_grad=False)
    x = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1).requires_grad_()
    torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3.default,
                          (x, offset, mask, *case.params(), 64, False))


def _randomised_module() -> DCNv3:
    torch.manual_seed(0)
    module = DCNv3(channels=32, group=4, center_feature_scale=True)
    with torch.no_grad():
        module.offset.weight.normal_(0, 0.3)
        module.mask.weight.normal_(0, 0.3)
    return module


def test_torch_compile_fullgraph_forward_and_backward():
    assert_compiled_matches_eager(_randomised_module(), torch.randn(2, 8, 8, 32))


@pytest.mark.slow
def test_torch_compile_inductor():
    torch._dynamo.reset()
    module = _randomised_module().eval()
    x = torch.randn(1, 6, 6, 32)
    compiled = torch.compile(module, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), atol=1e-5, rtol=1e-5)


def test_torch_export_contains_the_op():
    module = _randomised_module().eval()
    x = torch.randn(2, 8, 8, 32)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(module, (x,), dynamic_shapes={"input": {0: batch}})
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "ops_dcnv3.dcnv3.default" in targets
    for n in (2, 3):
        y = torch.randn(n, 8, 8, 32)
        torch.testing.assert_close(exported.module()(y), module(y))
