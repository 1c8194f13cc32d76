"""Multi-scale deformable attention is a first-class torch op (opcheck, torch.compile with
fullgraph, torch.export) and exports to ONNX in both forms: mmdeploy's
MMCVMultiScaleDeformableAttention node (TensorRT) and standard operators (GridSample) that
plain onnxruntime runs."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from compile_checks import assert_compiled_matches_eager
from msda_cases import Case

from ops_dcnv3.export import export_form
from ops_dcnv3.msda import kernel_available, level_start_index_of, multi_scale_deformable_attn

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 MSDA kernel not built")

LEVELS = ((6, 5), (3, 3), (2, 1))


@pytest.mark.parametrize("case", [Case(), Case(batch=1, levels=LEVELS, head_dim=3, heads=3, points=4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_opcheck(case, dtype):
    inputs = case.inputs(dtype)
    torch.library.opcheck(torch.ops.ops_dcnv3.msda.default, (*inputs, 64))


def test_opcheck_non_contiguous():
    value, shapes, starts, loc, weights = Case().inputs(requires_grad=False)
    value = value.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    torch.library.opcheck(torch.ops.ops_dcnv3.msda.default, (value, shapes, starts, loc, weights, 64))


class TinyAttention(torch.nn.Module):
    """The core of a deformable-attention layer around the op (projections and offsets as
    mmcv's module has them), with the level table as buffers."""

    def __init__(self, levels=LEVELS, heads: int = 2, head_dim: int = 4, points: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.heads, self.head_dim, self.points, self.levels = heads, head_dim, points, len(levels)
        dims = heads * head_dim
        self.register_buffer("spatial_shapes", torch.tensor(levels, dtype=torch.long))
        self.register_buffer("level_start_index", level_start_index_of(self.spatial_shapes))
        self.value_proj = torch.nn.Linear(dims, dims)
        self.offsets = torch.nn.Linear(dims, heads * self.levels * points * 2)
        self.weights = torch.nn.Linear(dims, heads * self.levels * points)
        with torch.no_grad():
            self.offsets.weight.mul_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (batch, keys, dims); queries = keys
        batch, keys, _ = x.shape
        value = self.value_proj(x).view(batch, keys, self.heads, self.head_dim)
        reference = torch.sigmoid(x[..., :2]).view(batch, keys, 1, 1, 1, 2)
        offsets = self.offsets(x).view(batch, keys, self.heads, self.levels, self.points, 2)
        loc = reference + offsets / 8
        weights = self.weights(x).view(batch, keys, self.heads, self.levels * self.points).softmax(-1)
        weights = weights.view(batch, keys, self.heads, self.levels, self.points)
        return multi_scale_deformable_attn(
            value, self.spatial_shapes, self.level_start_index, loc, weights, 64
        )


KEYS = sum(h * w for h, w in LEVELS)


def test_torch_compile_fullgraph_forward_and_backward():
    assert_compiled_matches_eager(TinyAttention(), torch.randn(2, KEYS, 8))


def test_torch_export_contains_the_op():
    module = TinyAttention().eval()
    x = torch.randn(2, KEYS, 8)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(module, (x,), dynamic_shapes={"x": {0: batch}})
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "ops_dcnv3.msda.default" in targets
    for n in (1, 3):
        y = torch.randn(n, KEYS, 8)
        torch.testing.assert_close(exported.module()(y), module(y))


def _export(module: torch.nn.Module, x: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (x,),
        buffer,
        dynamo=False,
        opset_version=opset,
        input_names=["x"],
        output_names=["out"],
        dynamic_axes={"x": {0: "batch"}, "out": {0: "batch"}},
        custom_opsets={"mmdeploy": 1},
    )
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("opset", [11, 17])
def test_onnx_plugin_form_is_mmdeploys_node(opset):
    model = _export(TinyAttention().eval(), torch.randn(1, KEYS, 8), opset)
    nodes = [n for n in model.graph.node if n.op_type == "MMCVMultiScaleDeformableAttention"]
    assert len(nodes) == 1
    (node,) = nodes
    assert node.domain == "mmdeploy" and len(node.input) == 5 and len(node.output) == 1
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} == {"im2col_step": 64}
    assert not any(n.op_type == "GridSample" for n in model.graph.node)
    # ONNX cannot infer the custom node's output: the symbolic states it, (N, queries, channels)
    infos = {v.name: v.type.tensor_type for v in [*model.graph.value_info, *model.graph.output]}
    out = infos[node.output[0]]
    assert out.elem_type == onnx.TensorProto.FLOAT and out.shape.dim[0].dim_param
    assert [d.dim_value for d in out.shape.dim[1:]] == [KEYS, 8]


def test_onnx_portable_form_runs_in_onnxruntime():
    import onnxruntime as ort

    module = TinyAttention().eval()
    with export_form("portable"):
        model = _export(module, torch.randn(2, KEYS, 8), 17)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("", "GridSample") in ops
    assert all(domain in ("", "ai.onnx") for domain, _ in ops), ops
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        x = torch.randn(batch, KEYS, 8)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, module(x).numpy(), atol=2e-5, rtol=1e-4)
