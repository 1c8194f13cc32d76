"""mmdeploy's torch2onnx on the dense models, through detection/deploy.py and
segmentation/deploy.py: Mask R-CNN InternImage-T and UperNet InternImage-T (random weights,
DCNv3 offsets/masks and the heads perturbed so that sampling leaves the regular grid and
detections exist), exported at small input sizes and checked in onnxruntime against PyTorch.

The scripts write ``deploy_check.json`` (graph facts and per-image comparisons); the
comparison itself (same mmdeploy-rewritten model run eagerly vs onnxruntime) lives in
dense_common/deploy.py and is asserted on here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("mmdeploy")
pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from ops_dcnv3 import kernel_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DET_CFG = ROOT / "detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"
SEG_CFG = ROOT / "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py"
DET_DEPLOY = ROOT / "detection/deploy/configs/mmdet/instance-seg"
SEG_DEPLOY = ROOT / "segmentation/deploy/configs/mmseg"
DCNV3_LAYERS = 4 + 4 + 18 + 4  # InternImage-T depths: one DCNv3 per block
SEG_SIZE = 256

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="needs the compiled DCNv3 CPU kernel")


def _load_script(tree: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_{tree}_deploy_script", ROOT / tree / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # also puts <tree>/ on sys.path (mmdet_custom / mmseg_custom)
    return module


def _write_images(folder: Path) -> list[str]:
    """Two real photos of different aspect ratios (scikit-image ships them offline)."""
    import cv2
    from skimage import data

    paths = []
    for name in ("astronaut", "coffee"):  # 512x512 and 400x600
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), getattr(data, name)()[..., ::-1])
        paths.append(str(path))
    return paths


def _perturb(model: torch.nn.Module, heads: dict[str, float]) -> None:
    """DCNv3 offsets/masks off zero (classification/export.py's helper) and larger weights for
    the named head layers: with their tiny default init every score sits near chance
    (no detection passes the 0.05 threshold, RPN scores nearly tie)."""
    from classification.export import perturb_dcnv3

    perturb_dcnv3(model.backbone)
    generator = torch.Generator().manual_seed(1)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, std in heads.items():
            layer = modules[name]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
    offsets = [m.offset.weight for n, m in model.named_modules() if n.endswith(".dcn")]
    assert len(offsets) == DCNV3_LAYERS and all(w.abs().sum() > 0 for w in offsets)


def _checkpoint(model_cfg: Path, deploy_cfg: Path, heads: dict[str, float], path: Path) -> str:
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.utils import load_config

    deploy, model = load_config(str(deploy_cfg), str(model_cfg))
    torch.manual_seed(0)
    net = build_task_processor(model, deploy, "cpu").build_pytorch_model(None)
    _perturb(net, heads)
    torch.save({"state_dict": net.state_dict()}, path)
    return str(path)


def _run(script: ModuleType, args: list[str], work_dir: Path) -> tuple[int, dict]:
    status = script.main([*args, "--work-dir", str(work_dir), "--runs", "0"])
    return status, json.loads((work_dir / "deploy_check.json").read_text())


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> dict:
    if not DET_CFG.exists():
        pytest.skip(f"{DET_CFG.relative_to(ROOT)} has not landed")
    script = _load_script("detection")
    folder = tmp_path_factory.mktemp("mask_rcnn_t")
    cfg = folder / "mask_rcnn_t_small.py"
    # Longest side 320 keeps the CPU run short; the two photos give 320x320 and 224x320 inputs.
    cfg.write_text(f"""_base_ = [{str(DET_CFG)!r}]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# fewer proposals and detections than COCO's 1000/100: the box and mask heads dominate on CPU
model = dict(test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(max_per_img=20)))
""")
    heads = {"rpn_head.rpn_cls": 0.05, "roi_head.bbox_head.fc_cls": 0.05}
    checkpoint = _checkpoint(cfg, DET_DEPLOY / "instance-seg_onnxruntime_dynamic.py", heads,
                             folder / "random.pth")
    return dict(script=script, cfg=str(cfg), checkpoint=checkpoint, images=_write_images(folder))


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> dict:
    if not SEG_CFG.exists():
        pytest.skip(f"{SEG_CFG.relative_to(ROOT)} has not landed")
    script = _load_script("segmentation")
    folder = tmp_path_factory.mktemp("upernet_t")
    cfg = folder / "upernet_t_small.py"
    cfg.write_text(f"""_base_ = [{str(SEG_CFG)!r}]
model = dict(data_preprocessor=dict(size=({SEG_SIZE}, {SEG_SIZE})))
""")
    heads = {"decode_head.conv_seg": 0.5}
    checkpoint = _checkpoint(cfg, SEG_DEPLOY / "segmentation_onnxruntime_static-512x512.py", heads,
                             folder / "random.pth")
    return dict(script=script, cfg=str(cfg), checkpoint=checkpoint, images=_write_images(folder))


def _small_seg_deploy_cfg(base: Path, folder: Path) -> str:
    """The published static 512x512 config at SEG_SIZE (same keys, smaller numbers)."""
    path = folder / f"small_{base.name}"
    shape = [1, 3, SEG_SIZE, SEG_SIZE]
    path.write_text(f"""_base_ = [{str(base)!r}]
onnx_config = dict(input_shape=[{SEG_SIZE}, {SEG_SIZE}])
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape={shape}, opt_shape={shape}, max_shape={shape})))])
""")
    return str(path)


def _input_dims(path: str) -> list:
    (graph_input,) = onnx.load(path, load_external_data=False).graph.input
    return [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]


def test_mask_rcnn_onnxruntime_dynamic(det, tmp_path):
    config = DET_DEPLOY / "instance-seg_onnxruntime_dynamic.py"
    status, summary = _run(det["script"], [str(config), det["cfg"], det["checkpoint"], det["images"][0],
                                           "--test-img", *det["images"]], tmp_path)
    graph = summary["graph"]
    assert graph["inputs"] == ["input"] and graph["outputs"] == ["dets", "labels", "masks"]
    assert graph["custom_ops"] == [] and graph["grid_sample_nodes"] == DCNV3_LAYERS  # plain onnxruntime
    assert _input_dims(summary["onnx"])[2:] == ["height", "width"]
    checks = summary["checks"]
    # exported at 320x320, also run at 224x320: the dynamic axes really are dynamic
    assert [c["input_shape"] for c in checks] == [[1, 3, 320, 320], [1, 3, 224, 320]]
    for check in checks:
        assert check["num_torch"] >= 5 and check["compared"] >= 5, check
        assert check["matched"] == check["compared"] and check["min_iou"] > 0.99, check
        assert check["max_score_diff"] < 1e-3 and check["max_box_diff"] < 0.5, check
        assert check["max_mask_diff"] < 1e-2, check
    assert status == 0


def test_mask_rcnn_tensorrt_export(det, tmp_path, capsys):
    config = DET_DEPLOY / "instance-seg_tensorrt-fp16_dynamic-320x320-1344x1344.py"
    status, summary = _run(det["script"], [str(config), det["cfg"], det["checkpoint"], det["images"][0]],
                           tmp_path)
    graph = summary["graph"]
    assert graph["opset"] == 11 and graph["grid_sample_nodes"] == 0
    assert graph["trt_dcnv3_nodes"] == DCNV3_LAYERS
    assert graph["inputs"] == ["input"] and graph["outputs"] == ["dets", "labels", "masks"]
    assert _input_dims(summary["onnx"])[2:] == ["height", "width"]
    if summary.get("engines"):  # a machine with TensorRT
        assert status == 0
        return
    assert status == 2 and "checks" not in summary  # mmdeploy's NMS/RoIAlign plugins: TensorRT only
    message = capsys.readouterr().err
    assert "tensorrt/README.md" in message and "--fp16" in message
    assert "--minShapes=input:1x3x320x320" in message and "--optShapes=input:1x3x800x1344" in message
    assert "--maxShapes=input:1x3x1344x1344" in message


def test_upernet_onnxruntime_static(seg, tmp_path):
    config = _small_seg_deploy_cfg(SEG_DEPLOY / "segmentation_onnxruntime_static-512x512.py", tmp_path)
    status, summary = _run(seg["script"], [config, seg["cfg"], seg["checkpoint"], seg["images"][0]], tmp_path)
    graph = summary["graph"]
    assert graph["inputs"] == ["input"] and graph["outputs"] == ["output"]
    assert graph["custom_ops"] == [] and graph["grid_sample_nodes"] == DCNV3_LAYERS
    assert _input_dims(summary["onnx"]) == [1, 3, SEG_SIZE, SEG_SIZE]
    (check,) = summary["checks"]
    assert check["input_shape"] == [1, 3, SEG_SIZE, SEG_SIZE]
    assert check["classes"] >= 5 and check["agreement"] >= 0.999, check
    assert status == 0


def test_upernet_tensorrt_export_runs_on_cpu(seg, tmp_path):
    """The TensorRT-bound file (plugin form) holds no other custom node, so the script also
    checks it on CPU (make_session lowers the TRTDCNv3 nodes to DeformConv for onnxruntime)."""
    config = _small_seg_deploy_cfg(SEG_DEPLOY / "segmentation_tensorrt_static-512x512.py", tmp_path)
    status, summary = _run(seg["script"], [config, seg["cfg"], seg["checkpoint"], seg["images"][1]], tmp_path)
    graph = summary["graph"]
    assert graph["opset"] == 11 and graph["custom_ops"] == ["mmdeploy::TRTDCNv3"]
    assert graph["trt_dcnv3_nodes"] == DCNV3_LAYERS and graph["grid_sample_nodes"] == 0
    (check,) = summary["checks"]
    assert check["agreement"] >= 0.999, check
    assert status == (0 if summary.get("engines") else 2)


def test_portable_form_needs_opset_16(seg, tmp_path):
    config = _small_seg_deploy_cfg(SEG_DEPLOY / "segmentation_tensorrt_static-512x512.py", tmp_path)
    with pytest.raises(ValueError, match="opset_version >= 16"):
        seg["script"].main([config, seg["cfg"], seg["checkpoint"], seg["images"][0],
                            "--dcnv3-form", "portable", "--work-dir", str(tmp_path)])
    assert not np.any([p.suffix == ".onnx" for p in tmp_path.iterdir()])
