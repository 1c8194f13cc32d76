"""ONNX export with the TorchScript exporter emits the published deployment node
mmdeploy::TRTDCNv3 with its full attribute set."""

from __future__ import annotations

import io

import onnx
import pytest
import torch
from onnx import helper

from ops_dcnv3 import kernel_available
from ops_dcnv3.modules import DCNv3
from ops_dcnv3.ops import dcnv3

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")


def _export(module: torch.nn.Module, x: torch.Tensor, **kwargs) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["input"], output_names=["output"],
                      custom_opsets={"mmdeploy": 1}, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


def _dcn_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.op_type == "TRTDCNv3"]


@pytest.mark.parametrize("opset", [11, 17])
def test_trtdcnv3_node_and_attributes(opset):
    module = DCNv3(channels=32, group=4, kernel_size=3, offset_scale=2.0).eval()
    model = _export(module, torch.randn(1, 6, 7, 32), opset_version=opset)
    nodes = _dcn_nodes(model)
    assert len(nodes) == 1
    node = nodes[0]
    assert node.domain == "mmdeploy" and len(node.input) == 3 and len(node.output) == 1
    # The symbolic spells them kernel_h_i, offset_scale_f, ...: the suffix is the type.
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "kernel_h": 3, "kernel_w": 3, "stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1,
        "dilation_h": 1, "dilation_w": 1, "group": 4, "group_channels": 8,
        "offset_scale": pytest.approx(2.0), "im2col_step": 256, "remove_center": 0,
    }
    types = {a.name: a.type for a in node.attribute}
    assert types.pop("offset_scale") == onnx.AttributeProto.FLOAT
    assert set(types.values()) == {onnx.AttributeProto.INT}
    assert any(o.domain == "mmdeploy" for o in model.opset_import)


def test_remove_center_attribute():
    module = DCNv3(channels=16, group=2, kernel_size=5, pad=2, remove_center=True).eval()
    (node,) = _dcn_nodes(_export(module, torch.randn(1, 5, 5, 16), opset_version=17))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["remove_center"] == 1 and attrs["kernel_h"] == 5 and attrs["pad_w"] == 2


def test_dynamic_batch_export():
    module = DCNv3(channels=16, group=2).eval()
    model = _export(module, torch.randn(2, 5, 5, 16), opset_version=17,
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    assert len(_dcn_nodes(model)) == 1
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


class _StridedOp(torch.nn.Module):
    def forward(self, x, offset, mask):
        return dcnv3(x, offset, mask, 3, 3, 2, 2, 1, 1, 1, 1, 2, 8, 1.0, 64, False)


def test_plugin_node_output_carries_type_and_shape():
    """ONNX cannot infer a custom node's output: the symbolic states it, (N, H_out, W_out, C)
    in the input's dtype, the batch left symbolic where it is dynamic."""
    x, offset, mask = torch.randn(1, 9, 7, 16), torch.randn(1, 5, 4, 36), torch.rand(1, 5, 4, 18)
    buffer = io.BytesIO()
    torch.onnx.export(_StridedOp(), (x, offset, mask), buffer, dynamo=False, opset_version=17,
                      input_names=["x", "offset", "mask"], custom_opsets={"mmdeploy": 1},
                      dynamic_axes={"x": {0: "batch"}, "offset": {0: "batch"}, "mask": {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    (node,) = _dcn_nodes(model)
    infos = {v.name: v.type.tensor_type for v in [*model.graph.value_info, *model.graph.output]}
    out = infos[node.output[0]]
    assert out.elem_type == onnx.TensorProto.FLOAT
    dims = out.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [5, 4, 16]
