"""DCNv3 as ONNX DeformConv (ops_dcnv3/onnx_deform.py), run in plain onnxruntime and
compared with the pure-PyTorch reference over fuzzed attributes: the portable export at
opset 19, and the lowering of hand-built mmdeploy::TRTDCNv3 nodes (opset 19, and older
opsets through the version converter)."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import onnx
import pytest
import torch
from dcnv3_cases import Case
from onnx import TensorProto, helper

from ops_dcnv3 import dcnv3
from ops_dcnv3.export import export_form, exporting_opset
from ops_dcnv3.onnx_deform import DCNv3Attrs, channel_orders
from ops_dcnv3.onnxruntime import PLUGIN_DOMAIN, PLUGIN_OP, lower_plugin_nodes, make_session

ort = pytest.importorskip("onnxruntime")

TOL = 5e-5  # float32 against the float64 reference
CASES = [
    Case(),
    Case(n=1, h=7, w=12, group=4, group_channels=8, stride=(2, 2)),
    Case(h=10, w=9, group=3, group_channels=4, kernel=(5, 5), pad=(2, 2), dilation=(2, 2),
         offset_scale=2.0, remove_center=True),
    Case(h=9, w=11, kernel=(3, 5), pad=(1, 2), dilation=(1, 2), offset_scale=0.5),
    Case(h=6, w=6, kernel=(1, 1), pad=(0, 0)),
    Case(h=8, w=8, group=1, group_channels=8, pad=(0, 0), remove_center=True, offset_range=4.0),
]


def _fuzzed_cases(count: int, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        kernel = (rng.choice([1, 3, 5]), rng.choice([1, 3]))
        remove_center = rng.random() < 0.3 and kernel[0] * kernel[1] > 1
        cases.append(Case(
            n=rng.randint(1, 2), h=rng.randint(5, 12), w=rng.randint(5, 12), group=rng.randint(1, 4),
            group_channels=rng.choice([2, 4, 8]), kernel=kernel,
            stride=(rng.randint(1, 2), rng.randint(1, 2)), pad=(kernel[0] // 2, kernel[1] // 2),
            dilation=(rng.randint(1, 2), 1), offset_scale=rng.choice([1.0, 0.5, 1.5]),
            remove_center=remove_center, offset_range=rng.choice([1.0, 3.0])))
    return cases


def _attrs(case: Case) -> DCNv3Attrs:
    return DCNv3Attrs(*case.params(), case.remove_center)


def _feeds(case: Case, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x, offset, mask = case.inputs(torch.float64, seed=seed, requires_grad=False)
    expected = case.reference_call(x, offset, mask).numpy()
    return {"x": x.float().numpy(), "offset": offset.float().numpy(), "mask": mask.float().numpy()}, expected


class _Op(torch.nn.Module):
    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case = case

    def forward(self, x, offset, mask):
        return dcnv3(x, offset, mask, *self.case.params(), self.case.im2col_step, self.case.remove_center)


def _portable_export(case: Case, opset: int) -> bytes:
    feeds, _ = _feeds(case)
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ("x", "offset", "mask", "out")}
    with export_form("portable"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Op(case), tuple(torch.from_numpy(v) for v in feeds.values()), buffer,
                          dynamo=False, opset_version=opset, input_names=list(feeds),
                          output_names=["out"], dynamic_axes=axes)
    return buffer.getvalue()


def _plugin_model(case: Case, opset: int) -> onnx.ModelProto:
    """One TRTDCNv3 node with the attributes the exporter writes; sizes left symbolic."""
    attrs = dict(zip(("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
                      "dilation_w", "group", "group_channels"), case.params()[:10]))
    node = helper.make_node(PLUGIN_OP, ["x", "offset", "mask"], ["out"], domain=PLUGIN_DOMAIN,
                            name="dcn", **attrs, offset_scale=case.offset_scale,
                            im2col_step=case.im2col_step, remove_center=int(case.remove_center))
    dims = {"x": ["n", "h", "w", "c"], "offset": ["n", "ho", "wo", "c_offset"],
            "mask": ["n", "ho", "wo", "c_mask"], "out": ["n", "ho", "wo", "c"]}
    info = {name: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
            for name, shape in dims.items()}
    graph = helper.make_graph([node], "one_dcnv3", [info["x"], info["offset"], info["mask"]], [info["out"]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid(PLUGIN_DOMAIN, 1)])


@pytest.mark.parametrize("case", CASES + _fuzzed_cases(6), ids=str)
def test_portable_export_is_deform_conv_and_matches_reference(case):
    data = _portable_export(case, opset=19)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert "DeformConv" in ops and not ops & {"GridSample", PLUGIN_OP}
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for seed in (0, 1):  # the second at another batch: the batch axis stays dynamic
        feeds, expected = _feeds(Case(**{**case.__dict__, "n": case.n + seed}), seed)
        got = session.run(["out"], feeds)[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=TOL, err_msg=str(case))


@pytest.mark.parametrize("opset", [19, 11])
@pytest.mark.parametrize("case", CASES + _fuzzed_cases(4, seed=1), ids=str)
def test_lowered_plugin_node_matches_reference(case, opset):
    model = _plugin_model(case, opset)
    lowered = lower_plugin_nodes(model)
    assert [(o.domain, o.version) for o in lowered.opset_import] == [("", 19)]
    assert [n.op_type for n in lowered.graph.node].count("DeformConv") == 1
    assert lowered.graph.node[-1].output[0] == "out"
    assert any(n.op_type == PLUGIN_OP for n in model.graph.node)  # the input is left alone
    feeds, expected = _feeds(case)
    got = make_session(model).run(["out"], feeds)[0]
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=TOL, err_msg=str(case))


def test_plugin_node_missing_attribute_is_named():
    model = _plugin_model(Case(), 19)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in ("kernel_h", "kernel_w")]
    del node.attribute[:]
    node.attribute.extend(kept)
    with pytest.raises(ValueError, match="lacks attributes.*kernel_h.*kernel_w"):
        lower_plugin_nodes(model)


@pytest.mark.parametrize("remove_center", [False, True])
def test_channel_orders(remove_center):
    attrs = DCNv3Attrs(3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 1.0, remove_center)
    offset_index, mask_index = channel_orders(attrs)
    points = 9 - remove_center
    assert offset_index.shape == (2 * 9 * 2,) and mask_index.shape == (2 * 9,)
    # DeformConv's kernel position (row j=0, column i=1) of group 1 is DCNv3's tap i*3+j = 3
    # of group 1: channel pair (dy, dx) <- DCNv3's (dx, dy) reversed
    tap = 3
    assert list(offset_index[2 * 9 + 2 * 1: 2 * 9 + 2 * 1 + 2]) == [
        (points + tap) * 2 + 1, (points + tap) * 2]
    assert mask_index[9 + 1] == points + tap
    centre = 4  # row 1, column 1
    if remove_center:
        assert list(offset_index[2 * centre: 2 * centre + 2]) == [2 * points * 2] * 2
        assert mask_index[centre] == 2 * points
        assert sorted(set(mask_index.tolist())) == list(range(2 * points + 1))
    else:
        assert sorted(offset_index.tolist()) == list(range(36))
        assert sorted(mask_index.tolist()) == list(range(18))


def test_exporting_opset_seen_during_trace():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(exporting_opset())
            return x + 1

    for opset in (17, 19):
        torch.onnx.export(Probe(), (torch.zeros(1),), io.BytesIO(), dynamo=False, opset_version=opset)
    assert seen == [17, 19]
