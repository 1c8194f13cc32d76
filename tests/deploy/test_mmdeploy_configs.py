"""mmdeploy deploy configs of the dense models and the torch 2.14 ONNX shims they rely on
(fast: nothing here exports a whole model)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("mmdeploy")

from mmdeploy.utils import (  # noqa: E402
    Backend,
    get_backend,
    get_dynamic_axes,
    get_input_shape,
    get_ir_config,
    get_model_inputs,
    load_config,
)

from dense_common import stack_compat  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DET = ROOT / "detection/deploy/configs/mmdet/instance-seg"
SEG = ROOT / "segmentation/deploy/configs/mmseg"
DET_CONFIGS = {
    "instance-seg_onnxruntime_static.py": (Backend.ONNXRUNTIME, None),
    "instance-seg_onnxruntime_dynamic.py": (Backend.ONNXRUNTIME, None),
    "instance-seg_tensorrt_dynamic-320x320-1344x1344.py": (Backend.TENSORRT, False),
    "instance-seg_tensorrt-fp16_dynamic-320x320-1344x1344.py": (Backend.TENSORRT, True),
}
SEG_CONFIGS = {
    "segmentation_onnxruntime_static-512x512.py": (Backend.ONNXRUNTIME, None),
    "segmentation_tensorrt_static-512x512.py": (Backend.TENSORRT, False),
    "segmentation_tensorrt-fp16_static-512x512.py": (Backend.TENSORRT, True),
}


def _load(path: Path):
    (cfg,) = load_config(str(path))
    return cfg


def _check_common(cfg, backend: Backend, fp16: bool | None) -> None:
    ir = get_ir_config(cfg)
    assert get_backend(cfg) == backend
    assert ir["type"] == "onnx" and ir["input_names"] == ["input"]
    if backend == Backend.TENSORRT:
        # TensorRT gets the published form: opset 11 and the TRTDCNv3 plugin node
        assert ir["opset_version"] == 11 and ir["dcnv3_form"] == "plugin"
        assert cfg.backend_config.common_config.fp16_mode is fp16
    else:
        # onnxruntime gets standard operators only (GridSample needs opset 16)
        assert ir["dcnv3_form"] == "portable" and ir["opset_version"] >= 16


@pytest.mark.parametrize("name", DET_CONFIGS)
def test_detection_configs(name):
    backend, fp16 = DET_CONFIGS[name]
    cfg = _load(DET / name)
    _check_common(cfg, backend, fp16)
    ir = get_ir_config(cfg)
    assert ir["output_names"] == ["dets", "labels", "masks"]
    assert cfg.codebase_config.type == "mmdet" and cfg.codebase_config.task == "ObjectDetection"
    assert cfg.codebase_config.post_processing.export_postprocess_mask is False
    axes = get_dynamic_axes(cfg)
    if "static" in name:
        assert not axes
        return
    assert axes["input"] == {0: "batch", 2: "height", 3: "width"}
    for output in ("dets", "labels", "masks"):
        assert axes[output][1] == "num_dets"
    if backend == Backend.TENSORRT:
        (inputs,) = get_model_inputs(cfg)
        assert inputs["input_shapes"]["input"] == {
            "min_shape": [1, 3, 320, 320], "opt_shape": [1, 3, 800, 1344], "max_shape": [1, 3, 1344, 1344]}


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_segmentation_configs(name):
    backend, fp16 = SEG_CONFIGS[name]
    cfg = _load(SEG / name)
    _check_common(cfg, backend, fp16)
    assert cfg.codebase_config.type == "mmseg" and cfg.codebase_config.with_argmax is True
    assert get_input_shape(cfg) == [512, 512]
    assert not get_dynamic_axes(cfg)
    if backend == Backend.TENSORRT:
        (inputs,) = get_model_inputs(cfg)
        shapes = inputs["input_shapes"]["input"]
        assert shapes["min_shape"] == shapes["opt_shape"] == shapes["max_shape"] == [1, 3, 512, 512]


def test_cast_long_shim_exports_int64_cast():
    stack_compat.apply(onnx=True)
    from torch.onnx import symbolic_opset9

    cast_long = symbolic_opset9._cast_Long  # what mmdeploy 1.3.1 imports (gone from torch 2.14)

    class ToLong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.long()

        @staticmethod
        def symbolic(g, x):
            return cast_long(g, x, False)

    class Model(torch.nn.Module):
        def forward(self, x):
            return ToLong.apply(x * 2)

    buffer = io.BytesIO()
    # no dynamo argument: the shim makes the TorchScript exporter the default, which is the
    # only one that honours autograd.Function.symbolic
    torch.onnx.export(Model(), (torch.randn(3),), buffer, opset_version=11, input_names=["x"],
                      output_names=["y"])
    model = onnx.load_from_string(buffer.getvalue())
    (cast,) = [n for n in model.graph.node if n.op_type == "Cast"]
    assert onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.INT64
    import onnxruntime as ort

    x = np.array([0.3, 1.7, -2.2], dtype=np.float32)
    (y,) = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.dtype == np.int64 and y.tolist() == (x * 2).astype(np.int64).tolist()


def test_cast_long_shim_in_a_fresh_process():
    """The deploy scripts install the shims before anything imports torch's
    backward-compatibility module torch/onnx/symbolic_opset9.py, which mmdeploy's RoIAlign
    symbolic imports by name at export time: the name must be there too."""
    code = ("from dense_common import stack_compat; stack_compat.apply(onnx=True); "
            "from torch.onnx.symbolic_opset9 import _cast_Long; print(_cast_Long.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "dense_common.stack_compat"


def test_onnx_shim_is_idempotent_and_keeps_explicit_arguments(monkeypatch):
    stack_compat.apply(onnx=True)
    wrapper = torch.onnx.export
    assert getattr(wrapper, "_internimage_default_torchscript", False)
    monkeypatch.setattr(stack_compat, "_applied", set())  # force a second installation
    stack_compat.apply(onnx=True)
    assert torch.onnx.export is wrapper  # not wrapped twice
    seen = []
    monkeypatch.setattr(wrapper, "__wrapped__", lambda *args, **kwargs: seen.append(kwargs))
    torch.onnx.export(None, (), None)
    torch.onnx.export(None, (), None, dynamo=True)
    assert seen == [{"dynamo": False}, {"dynamo": True}]


class _GridSample(torch.nn.Module):
    def forward(self, x, grid):
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)


@pytest.mark.parametrize("opset, node", [(16, ("", "GridSample")), (11, ("mmdeploy", "grid_sampler"))])
def test_mmdeploy_grid_sample_is_standard_from_opset_16(tmp_path, opset, node):
    """mmdeploy replaces every grid_sample symbolic with its own node; the shim restores the
    standard GridSample where the opset has it (what the portable DCNv3 form relies on)."""
    from mmdeploy.apis.onnx import export
    from mmengine import Config

    stack_compat.apply(onnx=True)
    cfg = Config(dict(onnx_config=dict(type="onnx", opset_version=opset, input_names=["x", "grid"],
                                       output_names=["y"]),
                      backend_config=dict(type="onnxruntime"),
                      codebase_config=dict(type="mmdet", task="ObjectDetection")))
    x, grid = torch.randn(1, 2, 5, 6), torch.rand(1, 3, 4, 2) * 2.4 - 1.2
    export(_GridSample(), (x, grid), str(tmp_path / "gs"), backend="onnxruntime",
           context_info=dict(deploy_cfg=cfg), input_names=["x", "grid"], output_names=["y"],
           opset_version=opset)
    model = onnx.load(str(tmp_path / "gs.onnx"))
    assert [(n.domain, n.op_type) for n in model.graph.node] == [node]
    if opset >= 16:
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "gs.onnx"), providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"x": x.numpy(), "grid": grid.numpy()})
        np.testing.assert_allclose(y, _GridSample()(x, grid).numpy(), atol=1e-6)
