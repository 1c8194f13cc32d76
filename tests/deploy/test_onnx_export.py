"""Deployment: ONNX exports of InternImage that run in plain onnxruntime (CPU).

Both DCNv3 export forms are checked against PyTorch on InternImage-T with random weights
whose offset/mask projections are perturbed (they start at zero, which would hide
sampling errors), at a small input size to stay fast: the portable form at opset 19
(DeformConv) and 17 (GridSample), the plugin form as make_session serves it (lowered to
DeformConv, or through the Python op where lowering is impossible)."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from classification import export as export_script
from ops_dcnv3 import kernel_available
from ops_dcnv3.export import export_form, get_export_form
from ops_dcnv3.modules import DCNv3

SIZE = 64
TOL = 1e-3
STANDARD_DOMAINS = {"", "ai.onnx"}

needs_plugin_runtime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_extensions") is None or not kernel_available("cpu"),
    reason="the TRTDCNv3 onnxruntime op needs onnxruntime-extensions and the compiled CPU kernel")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random weights" is the point here
        net, loaded = export_script.build("internimage_t_1k_224", None)
    assert not loaded
    offsets = [m.offset.weight.abs().sum().item() for m in net.modules() if isinstance(m, DCNv3)]
    assert offsets and all(v > 0 for v in offsets)  # perturbed: off the regular grid
    return net


def _export(module: torch.nn.Module, x: torch.Tensor, form: str, dynamic: bool,
            opset: int = 19) -> bytes:
    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    with export_form(form), torch.no_grad():
        torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"], dynamic_axes=axes,
                          custom_opsets={"mmdeploy": 1} if form == "plugin" else None)
    return buffer.getvalue()


def _run(data: bytes, x: torch.Tensor) -> np.ndarray:
    from ops_dcnv3.onnxruntime import make_session

    return make_session(data).run(["output"], {"input": x.numpy()})[0]


def _max_diff(module: torch.nn.Module, data: bytes, x: torch.Tensor) -> float:
    with torch.no_grad():
        expected = module(x).numpy()
    got = _run(data, x)
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize(("opset", "sampling_op"), [(19, "DeformConv"), (17, "GridSample")])
def test_portable_form_standard_ops_dynamic_batch(model, opset, sampling_op):
    data = _export(model, torch.randn(1, 3, SIZE, SIZE), "portable", dynamic=True, opset=opset)
    proto = onnx.load_from_string(data)
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert {d for d, _ in ops} <= STANDARD_DOMAINS, f"custom-domain nodes: {ops}"
    assert ("", sampling_op) in ops and not any(t == "TRTDCNv3" for _, t in ops)
    assert {t for _, t in ops} & {"DeformConv", "GridSample"} == {sampling_op}
    deform_convs = [n for n in proto.graph.node if n.op_type == "DeformConv"]
    assert len(deform_convs) == (sum(isinstance(m, DCNv3) for m in model.modules()) if opset >= 19 else 0)
    assert {o.domain for o in proto.opset_import} <= STANDARD_DOMAINS
    # Plain onnxruntime, no custom op library; exported at batch 1, run at batch 3.
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(session.run(["output"], {"input": x.numpy()})[0] - expected).max() < TOL


def test_portable_form_static_batch(model):
    x = torch.randn(2, 3, SIZE, SIZE)
    data = _export(model, x, "portable", dynamic=False)
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert _max_diff(model, data, x) < TOL


@pytest.mark.parametrize("opset", [19, 17])
def test_plugin_form_runs_in_onnxruntime_dynamic_batch(model, opset):
    from ops_dcnv3.onnxruntime import lower_plugin_nodes, make_session

    data = _export(model, torch.randn(1, 3, SIZE, SIZE), "plugin", dynamic=True, opset=opset)
    proto = onnx.load_from_string(data)
    nodes = [n for n in proto.graph.node if n.op_type == "TRTDCNv3"]
    assert len(nodes) == sum(isinstance(m, DCNv3) for m in model.modules())
    assert all(n.domain == "mmdeploy" for n in nodes)
    # onnxruntime gets the nodes lowered to DeformConv (opset 17 converted to 19 first)
    lowered = lower_plugin_nodes(proto)
    assert {o.domain for o in lowered.opset_import} <= STANDARD_DOMAINS
    assert [o.version for o in lowered.opset_import] == [max(opset, 19)]
    assert sum(n.op_type == "DeformConv" for n in lowered.graph.node) == len(nodes)
    assert not any(n.op_type == "TRTDCNv3" for n in lowered.graph.node)
    assert _max_diff(model, data, torch.randn(3, 3, SIZE, SIZE)) < TOL
    # make_session works on a copy: the caller's model keeps its nodes and domain.
    make_session(proto)
    kept = [n for n in proto.graph.node if n.op_type == "TRTDCNv3" and n.domain == "mmdeploy"]
    assert len(kept) == len(nodes)


@needs_plugin_runtime
def test_plugin_form_python_op_fallback(model, monkeypatch):
    """Where the model cannot be converted to opset 19, the nodes run on our kernel through
    the onnxruntime-extensions Python op, with a warning saying so."""
    from onnx import version_converter

    def refuse(*args, **kwargs):
        raise RuntimeError("no adapter")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    data = _export(model, torch.randn(1, 3, SIZE, SIZE), "plugin", dynamic=True, opset=17)
    with pytest.warns(RuntimeWarning, match="not lowered to DeformConv .*no adapter"):
        diff = _max_diff(model, data, torch.randn(2, 3, SIZE, SIZE))
    assert diff < TOL


@pytest.fixture()
def remove_center_module() -> torch.nn.Module:
    module = DCNv3(channels=16, group=2, kernel_size=5, pad=2, offset_scale=2.0, remove_center=True).eval()
    with torch.no_grad():
        module.offset.weight.normal_(std=0.3)
        module.offset.bias.normal_(std=1.0)
        module.mask.weight.normal_(std=0.3)
    return module


def test_plugin_attributes_round_trip(remove_center_module):
    x = torch.randn(1, 9, 7, 16)
    data = _export(remove_center_module, x, "plugin", dynamic=True)
    (node,) = [n for n in onnx.load_from_string(data).graph.node if n.op_type == "TRTDCNv3"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "kernel_h": 5, "kernel_w": 5, "stride_h": 1, "stride_w": 1, "pad_h": 2, "pad_w": 2,
        "dilation_h": 1, "dilation_w": 1, "group": 2, "group_channels": 8,
        "offset_scale": pytest.approx(2.0), "im2col_step": 256, "remove_center": 1,
    }
    # The lowering reads them back: same result as PyTorch, at another batch.
    assert _max_diff(remove_center_module, data, torch.randn(2, 9, 7, 16)) < 1e-4


@pytest.mark.parametrize("opset", [19, 17])
def test_portable_remove_center(remove_center_module, opset):
    data = _export(remove_center_module, torch.randn(1, 9, 7, 16), "portable", dynamic=True, opset=opset)
    assert _max_diff(remove_center_module, data, torch.randn(2, 9, 7, 16)) < 1e-4


def test_export_form_switch():
    assert get_export_form() == "plugin"
    with export_form("portable"):
        assert get_export_form() == "portable"
    assert get_export_form() == "plugin"
    with pytest.raises(ValueError, match="export form"):
        with export_form("tflite"):
            pass
    assert get_export_form() == "plugin"


def test_export_script_end_to_end(tmp_path, capsys):
    status = export_script.main([
        "--model_name", "internimage_t_1k_224", "--ckpt_dir", str(tmp_path / "none"), "--onnx",
        "--form", "both", "--img-size", "32", "--dynamic-batch", "--runs", "1",
        "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    for form in ("portable", "plugin"):
        assert (tmp_path / f"internimage_t_1k_224_{form}.onnx").is_file()
        assert f"[{form}] onnxruntime vs PyTorch, batch 3: max abs diff" in out
    assert "PyTorch eager latency" in out


def test_export_script_trt_without_tensorrt(capsys):
    if export_script.tensorrt_available():
        pytest.skip("tensorrt is installed here")
    status = export_script.main(["--model_name", "internimage_t_1k_224", "--trt"])
    err = capsys.readouterr().err
    assert status != 0
    assert "not installed" in err and "trtexec" in err and "libtrt_dcnv3.so" in err


def test_onnx_benchmark_runs_and_reports_both_forms(capsys):
    from classification import benchmark_onnx

    result = benchmark_onnx.main(["--img-size", "32", "--runs", "1"], print_machine=False)
    engines = ("pytorch_ms", "portable_ms", "plugin_ms", "portable_nospin_ms")
    assert set(engines) <= result.keys() and all(result[k] > 0 for k in engines)
    assert [t.name for t in benchmark_onnx.targets(result)] == [
        "onnxruntime portable form speed / PyTorch eager", "onnxruntime plugin form speed / portable form"]
    assert "opset 19" in capsys.readouterr().out


def test_image_size_from_name():
    assert export_script.image_size("internimage_t_1k_224") == 224
    assert export_script.image_size("internimage_xl_22k_192to384") == 384
