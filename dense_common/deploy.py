"""mmdeploy 1.3 pipeline for the InternImage dense models, shared by ``detection/deploy.py``
and ``segmentation/deploy.py`` (same command line as mmdeploy's ``tools/deploy.py``).

What it does, in order:

1. installs the torch 2.14 shims (``stack_compat.apply(onnx=True)``) and imports the plugin
   package (``mmdet_custom`` / ``mmseg_custom``) that registers ``InternImage``;
2. runs mmdeploy's ``torch2onnx`` with DCNv3 in the form the deploy config asks for
   (``onnx_config.dcnv3_form``, see the configs' ``_base_/onnx_config.py``; ``--dcnv3-form``
   overrides it): ``plugin`` writes ``mmdeploy::TRTDCNv3`` nodes, ``portable`` standard
   operators only;
3. checks the graph (input/output names, DCNv3 nodes);
4. ONNX Runtime backends: runs the file on IMG (and ``--test-img``) and compares it with
   PyTorch running the same mmdeploy-rewritten model eagerly (the compiled DCNv3 kernel),
   so the numbers measure the export itself: max abs difference of boxes/scores/masks of
   the top detections, or label-map agreement for segmentation; plus latency of both.
   TensorRT backends: builds the engine with mmdeploy's ``to_backend`` where TensorRT is
   installed (our plugin library loaded first); without TensorRT it says so, prints the
   commands, and — when the graph holds no other custom node — still checks the
   plugin-form file on CPU through :func:`ops_dcnv3.onnxruntime.make_session`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import logging
import os
import os.path as osp
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from classification.export import TRT_PLUGIN_LIB, median_ms, tensorrt_available
from classification.models.checkpoint import parse_args_with_trust
from classification.output_root import default_output
from dense_common import stack_compat

STANDARD_DOMAINS = ("", "ai.onnx")
DCNV3_FORMS = ("plugin", "portable")
DET_TOP_K = 10  # detections compared per image
DET_MIN_IOU = 0.99  # a top PyTorch detection must have an onnxruntime twin this close...
DET_SCORE_TOL = 1e-3  # ...with this score difference at most
SEG_MIN_AGREEMENT = 0.999  # fraction of equal pixels in the label maps
SEG_SCORE_TOL = 1e-3  # max abs difference of score maps (graphs without argmax)
EXIT_NO_TENSORRT = 2  # as classification/export.py --trt
SUMMARY_FILE = "deploy_check.json"  # graph facts and check results, in --work-dir


def build_parser(description: str) -> argparse.ArgumentParser:
    """mmdeploy's ``tools/deploy.py`` arguments, plus ``--dcnv3-form``, ``--trt-plugin`` and
    ``--runs``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deploy_cfg", help="mmdeploy deploy config")
    parser.add_argument("model_cfg", help="model config")
    parser.add_argument("checkpoint", help="model checkpoint")
    parser.add_argument("img", help="image used for the conversion (and the check)")
    parser.add_argument("--test-img", nargs="+", default=None,
                        help="more images to check the backend model on (default: IMG)")
    parser.add_argument("--work-dir", default=None,
                        help="where the files go (default: $INTERNIMAGE_OUTPUT/deploy/<model config name>, "
                             "outside the checkout)")
    parser.add_argument("--device", default="cpu", help="device for the conversion, e.g. cpu or cuda:0")
    parser.add_argument("--log-level", default="INFO", choices=list(logging._nameToLevel))
    parser.add_argument("--dump-info", action="store_true", help="write the mmdeploy SDK json files")
    parser.add_argument("--dcnv3-form", choices=DCNV3_FORMS, default=None,
                        help="override onnx_config.dcnv3_form of the deploy config")
    parser.add_argument("--trt-plugin", default=TRT_PLUGIN_LIB,
                        help="TRTDCNv3 plugin library loaded before building a TensorRT engine")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs for the latency medians of the check (0: no timing)")
    return parser


def import_plugin(name: str, registry_scope: str) -> None:
    """Imports the package that registers InternImage (``mmdet_custom``/``mmseg_custom``,
    importable from the script's folder). Where it is missing, the backbone must already
    be registered (e.g. by a caller in the same process)."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        registry = importlib.import_module(f"{registry_scope}.registry").MODELS
        if registry.get("InternImage") is None:
            raise SystemExit(f"error: cannot import {name} (which registers the InternImage backbone with "
                             f"{registry_scope}); run this script from the repository checkout") from None


def dcnv3_form(deploy_cfg: Any, override: str | None) -> str:
    """The DCNv3 ONNX form for this export; the portable form needs opset 16 (GridSample;
    DeformConv, the faster one, from 19)."""
    from mmdeploy.utils import get_ir_config

    from ops_dcnv3.export import PORTABLE_MIN_OPSET

    ir_config = get_ir_config(deploy_cfg)
    form = override or ir_config.get("dcnv3_form", "plugin")
    if form not in DCNV3_FORMS:
        raise ValueError(f"onnx_config.dcnv3_form must be one of {DCNV3_FORMS}, got {form!r}")
    opset = ir_config.get("opset_version", 11)
    if form == "portable" and opset < PORTABLE_MIN_OPSET:
        raise ValueError(f"the portable DCNv3 form needs opset_version >= {PORTABLE_MIN_OPSET} "
                         f"(GridSample), the deploy config has {opset}")
    return form


@contextlib.contextmanager
def tensorrt_graph_on_cpu(deploy_cfg: Any, device: str) -> Iterator[None]:
    """mmdeploy refuses to build a task processor for a TensorRT config on the CPU
    (``check_backend_device``), a guard meant for engine building. Exporting the graph and
    checking it in onnxruntime need no GPU, so the guard is lifted for those steps only."""
    from mmdeploy.apis.utils import utils as api_utils
    from mmdeploy.utils import Backend, get_backend, parse_device_id

    if get_backend(deploy_cfg) != Backend.TENSORRT or parse_device_id(device) != -1:
        yield
        return
    guard = api_utils.check_backend_device
    api_utils.check_backend_device = lambda deploy_cfg, device: None
    try:
        yield
    finally:
        api_utils.check_backend_device = guard


def graph_summary(path: str) -> dict[str, Any]:
    """Input/output names and the operators of the exported graph that matter here."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    nodes = model.graph.node
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})
    return {
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "opset": next(o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS),
        "trt_dcnv3_nodes": sum(n.op_type == "TRTDCNv3" and n.domain == "mmdeploy" for n in model.graph.node),
        "grid_sample_nodes": sum(n.op_type == "GridSample" for n in model.graph.node),
        "deform_conv_nodes": sum(n.op_type == "DeformConv" for n in model.graph.node),
        "custom_ops": custom,
    }


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (n, 4)."""
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:4], b[:, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[..., 2:4] - x[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def compare_detections(expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
                       top_k: int = DET_TOP_K) -> dict[str, Any]:
    """Matches the ``top_k`` highest-scoring PyTorch detections (batch item 0) to the
    onnxruntime ones of the same label by IoU (NMS may order near-ties differently, so
    rows are not compared blindly) and reports the worst differences."""
    def valid(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        dets, labels = out["dets"][0], out["labels"][0]
        keep = dets[:, 4] > 0  # mmdeploy pads with zero-score rows
        masks = out["masks"][0][keep] if "masks" in out else None
        return dets[keep], labels[keep], masks

    ref_dets, ref_labels, ref_masks = valid(expected)
    dets, labels, masks = valid(got)
    order = np.argsort(-ref_dets[:, 4], kind="stable")[:top_k]
    result: dict[str, Any] = {"num_torch": len(ref_dets), "num_onnx": len(dets), "compared": len(order),
                              "matched": 0, "min_iou": 1.0, "max_score_diff": 0.0, "max_box_diff": 0.0}
    if ref_masks is not None:
        result["max_mask_diff"] = 0.0
    for i in order:
        same = np.flatnonzero(labels == ref_labels[i])
        if same.size == 0:
            result["min_iou"] = 0.0
            continue
        ious = _box_iou(ref_dets[i, :4], dets[same, :4])
        j = same[int(np.argmax(ious))]
        result["min_iou"] = min(result["min_iou"], float(ious.max()))
        if ious.max() < DET_MIN_IOU:
            continue
        result["matched"] += 1
        diffs = {"max_score_diff": abs(ref_dets[i, 4] - dets[j, 4]),
                 "max_box_diff": np.abs(ref_dets[i, :4] - dets[j, :4]).max()}
        if ref_masks is not None:
            diffs["max_mask_diff"] = np.abs(ref_masks[i] - masks[j]).max()
        for key, value in diffs.items():
            result[key] = max(result[key], float(value))
    result["top"] = [(int(ref_labels[i]), round(float(ref_dets[i, 4]), 4),
                      [round(float(v), 1) for v in ref_dets[i, :4]]) for i in order[:5]]
    result["problems"] = _detection_problems(result)
    result["ok"] = not result["problems"]
    return result


def _detection_problems(result: dict[str, Any]) -> list[str]:
    """Why the onnxruntime detections disagree with PyTorch's (empty when they agree). Both
    finding nothing is agreement (e.g. random weights below the score threshold)."""
    problems = []
    if result["num_torch"] == 0 and result["num_onnx"] > 0:
        problems.append(f"onnxruntime finds {result['num_onnx']} detections where PyTorch finds none")
    if result["matched"] < result["compared"]:
        unmatched = result["compared"] - result["matched"]
        problems.append(f"{unmatched} of PyTorch's top {result['compared']} have no onnxruntime twin of the "
                        f"same label with IoU >= {DET_MIN_IOU} (min IoU {result['min_iou']:.4f})")
    if result["max_score_diff"] > DET_SCORE_TOL:
        problems.append(f"max |score diff| {result['max_score_diff']:.2e} > {DET_SCORE_TOL:.0e}")
    return problems


def compare_segmentation(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Label-map agreement (``with_argmax`` graphs) or max abs difference of the scores."""
    (name,) = expected
    ref, out = expected[name], got[name]
    if ref.shape != out.shape:
        why = f"output shapes differ: PyTorch {tuple(ref.shape)}, onnxruntime {tuple(out.shape)}"
        return {"ok": False, "shape_torch": ref.shape, "shape_onnx": out.shape, "problems": [why]}
    if np.issubdtype(ref.dtype, np.integer):
        agreement = float((ref == out).mean())
        problems = [] if agreement >= SEG_MIN_AGREEMENT else [
            f"label maps agree on {100 * agreement:.3f}% of pixels < {100 * SEG_MIN_AGREEMENT:.1f}%"]
        return {"agreement": agreement, "classes": int(np.unique(ref).size), "ok": not problems,
                "problems": problems}
    diff = float(np.abs(ref - out).max())
    problems = [] if diff < SEG_SCORE_TOL else [f"max |score diff| {diff:.2e} >= {SEG_SCORE_TOL:.0e}"]
    return {"max_abs_diff": diff, "ok": not problems, "problems": problems}


class RewrittenTorchModel:
    """The PyTorch model as mmdeploy traces it (rewriters active, same inputs and outputs as
    the ONNX graph), run eagerly: the reference the exported file must reproduce."""

    def __init__(self, model: torch.nn.Module, deploy_cfg: Any, output_names: Sequence[str]):
        from mmdeploy.core import patch_model
        from mmdeploy.utils import IR, get_backend, get_ir_config

        self.deploy_cfg = deploy_cfg
        self.backend = get_backend(deploy_cfg).value
        self.opset = get_ir_config(deploy_cfg).get("opset_version", 11)
        self.model = patch_model(model, cfg=deploy_cfg, backend=self.backend, ir=IR.ONNX)
        self.output_names = list(output_names)

    def __call__(self, inputs: torch.Tensor, data_samples: Any) -> dict[str, np.ndarray]:
        from mmdeploy.core import RewriterContext
        from mmdeploy.utils import IR

        with RewriterContext(cfg=self.deploy_cfg, backend=self.backend, ir=IR.ONNX, opset=self.opset), \
                torch.no_grad():
            outputs = self.model.forward(inputs, data_samples=data_samples, mode="predict")
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.detach().cpu().numpy() for name, out in zip(self.output_names, outputs)}


def check_onnx(onnx_path: str, deploy_cfg: Any, model_cfg: Any, checkpoint: str, images: Sequence[str],
               device: str, runs: int) -> list[dict[str, Any]]:
    """Runs the exported file in onnxruntime on each image and compares it with the
    rewritten PyTorch model (see the module docstring)."""
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.utils import get_input_shape, get_ir_config

    from ops_dcnv3.onnxruntime import make_session

    task_processor = build_task_processor(model_cfg, deploy_cfg, device)
    torch_model = task_processor.build_pytorch_model(checkpoint)
    output_names = get_ir_config(deploy_cfg)["output_names"]
    reference = RewrittenTorchModel(torch_model, deploy_cfg, output_names)
    input_shape = get_input_shape(deploy_cfg)
    compare = compare_detections if deploy_cfg.codebase_config.type == "mmdet" else compare_segmentation
    preprocessor = getattr(torch_model, "data_preprocessor", None)
    cases = []
    for img in images:
        data, inputs = task_processor.create_input(img, input_shape, data_preprocessor=preprocessor)
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        cases.append((img, inputs, data["data_samples"], reference(inputs, data["data_samples"])))
    # The session is opened after the PyTorch runs and closed before PyTorch is timed, so
    # that the two thread pools never compete for the cores.
    session = make_session(onnx_path)
    results = []
    for img, inputs, _, expected in cases:
        feed = {"input": inputs.cpu().numpy()}
        got = dict(zip(output_names, session.run(output_names, feed)))
        result = {"image": img, "input_shape": list(inputs.shape), **compare(expected, got)}
        if runs > 0:
            result["onnx_ms"] = median_ms(lambda: session.run(output_names, feed), runs, warmup=1)  # noqa: B023
        results.append(result)
    session = None  # closed before PyTorch is timed
    if runs > 0:
        for result, (_, inputs, samples, _) in zip(results, cases):
            result["torch_ms"] = median_ms(lambda: reference(inputs, samples), runs, warmup=1)  # noqa: B023
    return results


def _format_check(result: dict[str, Any]) -> str:
    shape = "x".join(str(s) for s in result["input_shape"][2:])
    if "agreement" in result:
        text = f"label maps agree on {100 * result['agreement']:.3f}% of pixels ({result['classes']} classes)"
    elif "matched" in result:
        text = (f"{result['num_onnx']} detections (PyTorch {result['num_torch']}); top {result['compared']}: "
                f"{result['matched']} matched, min IoU {result['min_iou']:.4f}, max |score diff| "
                f"{result['max_score_diff']:.2e}, max |box diff| {result['max_box_diff']:.2e} px")
        if "max_mask_diff" in result:
            text += f", max |mask diff| {result['max_mask_diff']:.2e}"
        if result["top"]:
            text += "\n    top detections (label, score, box): " + "; ".join(str(t) for t in result["top"])
        elif result["num_onnx"] == 0:
            text += " (neither finds a detection: they agree, nothing else to compare)"
    else:
        text = str({k: v for k, v in result.items() if k not in ("image", "input_shape", "problems", "ok")})
    if "onnx_ms" in result:
        text += (f"\n    latency, median: onnxruntime {result['onnx_ms']:.0f} ms, "
                 f"PyTorch {result['torch_ms']:.0f} ms")
    problems = result.get("problems") or ["outputs differ"]
    verdict = "" if result["ok"] else "\n    MISMATCH: " + "; ".join(problems)
    return f"  {osp.basename(result['image'])} ({shape}): {text}{verdict}"


def _tensorrt_commands(onnx_path: str, deploy_cfg: Any, argv: Sequence[str], plugin: str) -> str:
    """The commands to run where TensorRT 10 is installed."""
    from mmdeploy.utils import get_model_inputs

    try:
        from mmdeploy.backend.tensorrt.init_plugins import get_ops_path

        mmdeploy_ops = get_ops_path() or "<mmdeploy>/lib/libmmdeploy_tensorrt_ops.so"
    except Exception:  # noqa: BLE001 - only for the message
        mmdeploy_ops = "<mmdeploy>/lib/libmmdeploy_tensorrt_ops.so"
    shapes = get_model_inputs(deploy_cfg)[0]["input_shapes"]["input"]
    dims = {k: "x".join(str(v) for v in shapes[f"{k}_shape"]) for k in ("min", "opt", "max")}
    engine = osp.splitext(onnx_path)[0] + ".engine"
    trtexec = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine}", f"--staticPlugins={plugin}",
               f"--staticPlugins={mmdeploy_ops}", f"--minShapes=input:{dims['min']}",
               f"--optShapes=input:{dims['opt']}", f"--maxShapes=input:{dims['max']}"]
    if deploy_cfg.backend_config.get("common_config", {}).get("fp16_mode"):
        trtexec.append("--fp16")
    return ("  1. build the plugin: see tensorrt/README.md (cmake -S tensorrt -B tensorrt/build "
            "-DTENSORRT_DIR=...)\n"
            f"  2. rerun this script there: python {shlex.join(argv)} --device cuda:0\n"
            f"     or build the engine from this ONNX file with trtexec:\n     {shlex.join(trtexec)}")


def build_tensorrt(onnx_path: str, deploy_cfg: Any, work_dir: str, device: str, plugin: str) -> list[str]:
    """mmdeploy's ``to_backend`` with our plugin library loaded first (its creator
    registers itself on load)."""
    import ctypes

    from mmdeploy.apis.utils import to_backend
    from mmdeploy.utils import Backend

    if not osp.isfile(plugin):
        raise SystemExit(f"error: the TRTDCNv3 plugin library {plugin} does not exist; build it first "
                         "(tensorrt/README.md) or pass --trt-plugin")
    ctypes.CDLL(plugin, mode=ctypes.RTLD_GLOBAL)
    return to_backend(Backend.TENSORRT, [onnx_path], work_dir=work_dir, deploy_cfg=deploy_cfg, device=device)


def main(argv: Sequence[str] | None, *, plugin_package: str, registry_scope: str, description: str,
         script: str) -> int:
    """The whole pipeline; returns the exit status (0 ok, 1 check failed, 2 TensorRT missing)
    and leaves a summary in ``<work-dir>/deploy_check.json``."""
    args = parse_args_with_trust(build_parser(description), argv)  # adds --trust-checkpoint
    if args.work_dir is None:
        args.work_dir = default_output("deploy", osp.splitext(osp.basename(args.model_cfg))[0])
    stack_compat.apply(onnx=True)
    import_plugin(plugin_package, registry_scope)

    from mmdeploy.apis import torch2onnx
    from mmdeploy.utils import get_backend, get_ir_config, get_root_logger, load_config

    from ops_dcnv3.export import export_form

    logger = get_root_logger()
    logger.setLevel(logging.getLevelName(args.log_level))
    deploy_cfg, model_cfg = load_config(args.deploy_cfg, args.model_cfg)
    backend = get_backend(deploy_cfg)
    form = dcnv3_form(deploy_cfg, args.dcnv3_form)
    os.makedirs(osp.abspath(args.work_dir), exist_ok=True)
    if args.dump_info:
        from mmdeploy.backend.sdk.export_info import export2SDK

        # copies: export2SDK edits the model config it is given (mmseg: decode_head.with_argmax)
        export2SDK(copy.deepcopy(deploy_cfg), copy.deepcopy(model_cfg), args.work_dir, pth=args.checkpoint,
                   device=args.device)

    save_file = get_ir_config(deploy_cfg)["save_file"]
    onnx_path = osp.join(args.work_dir, save_file)
    start = time.perf_counter()
    with export_form(form), tensorrt_graph_on_cpu(deploy_cfg, args.device), warnings.catch_warnings():
        # "legacy TorchScript exporter" and tracer warnings: expected for mmdeploy's export
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch2onnx(args.img, args.work_dir, save_file, deploy_cfg, model_cfg, args.checkpoint,
                   device=args.device)
    graph = graph_summary(onnx_path)
    seconds = time.perf_counter() - start
    print(f"wrote {onnx_path} ({osp.getsize(onnx_path) / 2**20:.1f} MiB) in {seconds:.1f} s: "
          f"inputs {graph['inputs']}, outputs {graph['outputs']}, opset {graph['opset']}, DCNv3 form {form} "
          f"({graph['trt_dcnv3_nodes']} TRTDCNv3, {graph['grid_sample_nodes']} GridSample nodes), "
          f"custom ops {graph['custom_ops'] or 'none'}")

    images = [args.img] + [p for p in (args.test_img or []) if p != args.img]
    summary: dict[str, Any] = {"onnx": onnx_path, "backend": backend.value, "dcnv3_form": form,
                               "graph": graph}
    status = _convert_and_check(args, argv, script, deploy_cfg, model_cfg, backend, onnx_path, graph, images,
                                summary)
    summary["status"] = status
    with open(osp.join(args.work_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return status


def _convert_and_check(args: argparse.Namespace, argv: Sequence[str] | None, script: str, deploy_cfg: Any,
                       model_cfg: Any, backend: Any, onnx_path: str, graph: dict[str, Any],
                       images: Sequence[str], summary: dict[str, Any]) -> int:
    from mmdeploy.utils import Backend

    if backend == Backend.ONNXRUNTIME:
        results = summary["checks"] = check_onnx(onnx_path, deploy_cfg, model_cfg, args.checkpoint, images,
                                                 args.device, args.runs)
        print("onnxruntime vs PyTorch (the same rewritten model, eager):")
        for result in results:
            print(_format_check(result))
        return 0 if all(r["ok"] for r in results) else 1
    if backend != Backend.TENSORRT:
        print(f"backend {backend.value}: exported the ONNX file only (this script converts for "
              "onnxruntime and tensorrt)")
        return 0

    status = 0
    if tensorrt_available():
        summary["engines"] = build_tensorrt(onnx_path, deploy_cfg, args.work_dir, args.device,
                                            args.trt_plugin)
        print(f"TensorRT engine(s): {summary['engines']}")
    else:
        command = [script, *(argv if argv is not None else sys.argv[1:])]
        print("TensorRT is not installed here, so no engine was built. The ONNX file above is the "
              "TensorRT input (DCNv3 as mmdeploy::TRTDCNv3). On a machine with TensorRT 10 and CUDA:\n"
              f"{_tensorrt_commands(onnx_path, deploy_cfg, command, args.trt_plugin)}", file=sys.stderr)
        status = EXIT_NO_TENSORRT
    others = [op for op in graph["custom_ops"] if op != "mmdeploy::TRTDCNv3"]
    if others:
        print(f"CPU check skipped: the graph holds TensorRT-only nodes {others}")
        return status
    with tensorrt_graph_on_cpu(deploy_cfg, "cpu"):
        results = summary["checks"] = check_onnx(onnx_path, deploy_cfg, model_cfg, args.checkpoint, images,
                                                 "cpu", 0)
    print("onnxruntime (TRTDCNv3 served by our CPU kernel) vs PyTorch, the TensorRT-bound graph on CPU:")
    for result in results:
        print(_format_check(result))
    return status if all(r["ok"] for r in results) else 1
