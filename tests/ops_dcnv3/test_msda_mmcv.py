"""mmcv's MultiScaleDeformableAttention (and the functions it calls) run on our MSDA kernel
after ``dense_common.stack_compat.apply()``, with no config change and the same parameter
names; ONNX export of the module in both forms; a real mmdet DINO-T forward on a photo is the
same with and without our kernel."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from msda_cases import Case, reference

pytest.importorskip("mmcv", reason="mmcv is not installed (tools/bootstrap.sh installs it)")

from mmcv.ops import MultiScaleDeformableAttention  # noqa: E402
from mmcv.ops import multi_scale_deform_attn as mmcv_msda_module  # noqa: E402

from dense_common import stack_compat  # noqa: E402
from ops_dcnv3 import mmcv_msda  # noqa: E402
from ops_dcnv3.export import export_form  # noqa: E402
from ops_dcnv3.msda import kernel_available  # noqa: E402

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 MSDA kernel not built")

REPO = Path(__file__).resolve().parents[2]
LEVELS = ((8, 9), (4, 5), (2, 3))
KEYS = sum(h * w for h, w in LEVELS)
PUBLISHED_NAMES = [
    "sampling_offsets.weight",
    "sampling_offsets.bias",
    "attention_weights.weight",
    "attention_weights.bias",
    "value_proj.weight",
    "value_proj.bias",
    "output_proj.weight",
    "output_proj.bias",
]


@pytest.fixture(autouse=True)
def _installed():
    stack_compat.apply()
    mmcv_msda.install()  # a test below uninstalls; every test starts installed
    yield
    mmcv_msda.install()


def _module(dtype=torch.float64) -> MultiScaleDeformableAttention:
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(
        embed_dims=32, num_heads=4, num_levels=len(LEVELS), num_points=3, batch_first=True, dropout=0.0
    )
    with torch.no_grad():  # away from the init (zero attention logits, tiny offsets)
        module.sampling_offsets.weight.normal_(0, 0.5)
        module.attention_weights.weight.normal_(0, 0.5)
    return module.to(dtype).eval()


def _call(module, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(2, 7, 32, generator=gen, dtype=dtype, requires_grad=True)
    value = torch.randn(2, KEYS, 32, generator=gen, dtype=dtype, requires_grad=True)
    ref_points = torch.rand(2, 7, len(LEVELS), 2, generator=gen, dtype=dtype)
    shapes = torch.tensor(LEVELS)
    starts = torch.tensor([0, 72, 92])
    out = module(
        query, value=value, reference_points=ref_points, spatial_shapes=shapes, level_start_index=starts
    )
    return out, (query, value)


def test_module_runs_our_kernel_on_cpu_and_matches_mmcv(monkeypatch):
    calls = []
    ours = mmcv_msda.multi_scale_deformable_attn
    monkeypatch.setattr(mmcv_msda, "multi_scale_deformable_attn", lambda *a: calls.append(1) or ours(*a))
    module = _module()
    out, inputs = _call(module)
    assert calls, "mmcv's module did not reach the ops_dcnv3 kernel"
    grads = torch.autograd.grad(out.square().sum(), [*inputs, *module.parameters()])

    mmcv_msda.uninstall()
    assert not hasattr(mmcv_msda_module.multi_scale_deformable_attn_pytorch, "_ops_dcnv3_msda")
    calls.clear()
    expected, expected_inputs = _call(module)
    assert not calls
    expected_grads = torch.autograd.grad(expected.square().sum(), [*expected_inputs, *module.parameters()])
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_parameter_names_are_the_published_ones():
    module = _module()
    assert type(module) is mmcv_msda_module.MultiScaleDeformableAttention
    assert list(module.state_dict()) == PUBLISHED_NAMES


def test_function_runs_on_cpu():
    """mmcv's MultiScaleDeformableAttnFunction has no CPU kernel of its own; now it works."""
    case = Case(levels=LEVELS, head_dim=5, points=2)
    inputs = case.inputs()
    value, shapes, starts, loc, weights = inputs
    out = mmcv_msda_module.MultiScaleDeformableAttnFunction.apply(value, shapes, starts, loc, weights, 64)
    expected = reference(value, shapes, loc, weights)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    grad = torch.randn(out.shape, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad(out, (value, loc, weights), grad),
        torch.autograd.grad(expected, (value, loc, weights), grad),
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_mixed_dtypes_compute_in_the_widest():
    """bfloat16 value with float32 locations (CPU autocast): locations keep float32 precision."""
    case = Case(levels=LEVELS, head_dim=8)
    value, shapes, starts, loc, weights = case.inputs(torch.float32, requires_grad=False)
    value16 = value.bfloat16()
    out = mmcv_msda_module.multi_scale_deformable_attn_pytorch(value16, shapes, loc, weights)
    assert out.dtype == torch.bfloat16
    expected = reference(value16.float(), shapes, loc, weights)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=1e-2)


def _export(module, opset: int) -> onnx.ModelProto:
    shapes = torch.tensor(LEVELS)
    starts = torch.tensor([0, 72, 92])

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = module

        def forward(self, query, value, ref_points):
            return self.attention(
                query,
                value=value,
                reference_points=ref_points,
                spatial_shapes=shapes,
                level_start_index=starts,
            )

    buffer = io.BytesIO()
    args = (torch.randn(1, 7, 32), torch.randn(1, KEYS, 32), torch.rand(1, 7, len(LEVELS), 2))
    torch.onnx.export(
        Wrapper(),
        args,
        buffer,
        dynamo=False,
        opset_version=opset,
        input_names=["query", "value", "ref_points"],
        output_names=["out"],
        custom_opsets={"mmdeploy": 1},
    )
    return onnx.load_from_string(buffer.getvalue())


def test_onnx_export_of_mmcvs_module_in_both_forms():
    import onnxruntime as ort

    module = _module(torch.float32)
    plugin = _export(module, 17)
    assert [n.domain for n in plugin.graph.node if n.op_type == "MMCVMultiScaleDeformableAttention"] == [
        "mmdeploy"
    ]
    with export_form("portable"):
        portable = _export(module, 17)
    assert not any(n.domain == "mmdeploy" for n in portable.graph.node)
    session = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(3)
    query, value = torch.randn(1, 7, 32, generator=gen), torch.randn(1, KEYS, 32, generator=gen)
    ref_points = torch.rand(1, 7, len(LEVELS), 2, generator=gen)
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(["query", "value", "ref_points"], (query.numpy(), value.numpy(), ref_points.numpy())))
    (got,) = session.run(None, {k: v for k, v in feeds.items() if k in names})
    with torch.no_grad():
        expected = module(
            query,
            value=value,
            reference_points=ref_points,
            spatial_shapes=torch.tensor(LEVELS),
            level_start_index=torch.tensor([0, 72, 92]),
        )
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-5, rtol=1e-4)


def _dino_t():
    """mmdet's DINO-4scale with InternImage-T, from our published config (random weights)."""
    pytest.importorskip("mmdet", reason="mmdet 3 is not installed")
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    detection = str(REPO / "detection")
    if detection not in sys.path:
        sys.path.insert(0, detection)
    register_all_modules()
    init_default_scope("mmdet")
    cfg = Config.fromfile(
        str(REPO / "detection/configs/coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py")
    )
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.with_cp = False
    cfg.model.num_queries = 200  # a 128x160 photo gives 426 encoder tokens, fewer than DINO's 900
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_dino_t_on_a_photo_is_the_same_with_and_without_our_kernel():
    """A real DINO-T forward (backbone, 6 encoder and 6 decoder layers of mmcv's
    MultiScaleDeformableAttention) on a photo: the encoder memory and the final detections
    agree between our kernel and mmcv's grid_sample function."""
    skimage_data = pytest.importorskip("skimage.data")
    from mmdet.structures import DetDataSample
    from PIL import Image

    model = _dino_t()
    photo = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((160, 128)))
    image = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    sample = DetDataSample(metainfo=dict(img_shape=(128, 160), ori_shape=(128, 160), scale_factor=(1.0, 1.0)))
    memories = []
    hook = model.encoder.register_forward_hook(
        lambda module, args, out: memories.append(out.detach().clone())
    )
    calls = []
    ours = mmcv_msda.multi_scale_deformable_attn

    def run():
        with torch.no_grad():
            (result,) = model.test_step(dict(inputs=[image], data_samples=[sample]))
        return result.pred_instances

    try:
        mmcv_msda.multi_scale_deformable_attn = lambda *a: calls.append(1) or ours(*a)
        with_kernel = run()
        assert len(calls) == 12, "expected 6 encoder and 6 decoder MSDA calls on our kernel"
        mmcv_msda.uninstall()
        without_kernel = run()
        assert len(calls) == 12
    finally:
        mmcv_msda.multi_scale_deformable_attn = ours
        hook.remove()
    torch.testing.assert_close(memories[0], memories[1], atol=1e-4, rtol=1e-4)
    assert len(with_kernel.scores) == 100
    torch.testing.assert_close(with_kernel.scores, without_kernel.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(with_kernel.bboxes, without_kernel.bboxes, atol=1e-2, rtol=1e-4)
    assert torch.equal(with_kernel.labels, without_kernel.labels)
