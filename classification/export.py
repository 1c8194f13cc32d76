"""Export an InternImage classifier to ONNX, check it in onnxruntime, and (where TensorRT
is installed) show how to build an engine.

    python classification/export.py --model_name internimage_t_1k_224 --ckpt_dir DIR --onnx
    python classification/export.py --model_name internimage_t_1k_224 --ckpt_dir DIR --onnx \
        --form plugin --dynamic-batch
    python classification/export.py --model_name internimage_t_1k_224 --ckpt_dir DIR --trt

Forms (see ops_dcnv3/export.py): ``portable`` (default) writes standard ONNX operators
only, so any onnxruntime runs the file; ``plugin`` writes one ``mmdeploy::TRTDCNv3`` node
per DCNv3 (TensorRT plugin of tensorrt/, or the onnxruntime op of ops_dcnv3/onnxruntime.py);
``both`` writes the two and compares them. Weights come from ``<ckpt_dir>/<model_name>.pth``;
without that file the model keeps random weights (with a warning).

Also callable in-process: ``main([...])`` returns the exit status."""

from __future__ import annotations

import os
import sys

# Runnable as `python classification/export.py`: the repository root must be importable,
# and this folder must not be (its `data`, `utils`, `config` would shadow other modules).
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE or p == ""]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FORMS = ("portable", "plugin")
TRT_PLUGIN_LIB = os.path.join(_ROOT, "tensorrt", "build", "libtrt_dcnv3.so")


def image_size(model_name: str) -> int:
    """The input size a published name ends with (``..._224``, ``..._192to384`` -> 384)."""
    match = re.search(r"(\d+)$", model_name)
    if match is None:
        raise ValueError(f"cannot read an input size from {model_name!r}; pass --img-size")
    return int(match.group(1))


def perturb_dcnv3(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Random offset/mask projections (they are initialised to zero), so that a check on a
    randomly initialised model samples off the regular grid, as trained weights do."""
    from ops_dcnv3.modules.dcnv3 import _DCNv3Base

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _DCNv3Base):
                for layer, bias_std in ((module.offset, 0.5), (module.mask, 0.5)):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * bias_std)


def build(model_name: str, ckpt_dir: str | None) -> tuple[torch.nn.Module, bool]:
    """The eval-mode model and whether trained weights were loaded."""
    import timm

    import classification.models  # noqa: F401  (registers the published names with timm)
    from classification.models import load_pretrained

    model = timm.create_model(model_name, pretrained=False)
    path = os.path.join(ckpt_dir, f"{model_name}.pth") if ckpt_dir else None
    if path and os.path.isfile(path):
        print(load_pretrained(model, path))
        return model.eval(), True
    warnings.warn(
        f"no checkpoint at {path or '<no --ckpt_dir>'}: exporting {model_name} with RANDOM weights "
        "(offset/mask projections randomised so the check exercises deformable sampling). "
        "The file is fine for testing the pipeline, useless for predictions.", UserWarning, stacklevel=2)
    perturb_dcnv3(model)
    return model.eval(), False


def export_onnx(model: torch.nn.Module, path: str, form: str, batch: int, size: int,
                dynamic_batch: bool, opset: int = 19) -> None:
    """torch.onnx.export (TorchScript exporter: the DCNv3 symbolic needs it), input
    ``input`` (N, 3, size, size), output ``output``."""
    from ops_dcnv3.export import PORTABLE_MIN_OPSET, export_form

    if form == "portable" and opset < PORTABLE_MIN_OPSET:
        raise ValueError(f"the portable form needs opset >= {PORTABLE_MIN_OPSET} (GridSample; "
                         f"DeformConv, the faster one, from 19), got {opset}")
    dummy = torch.randn(batch, 3, size, size)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with export_form(form), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript exporter": intended
        # tracing the model's shape checks ("converting a tensor to a Python boolean"): the
        # shapes are those of the export, the check below compares the file with PyTorch
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (dummy,), path, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes,
                          custom_opsets={"mmdeploy": 1} if form == "plugin" else None)


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def check_onnx(model: torch.nn.Module, path: str, batch: int, size: int, runs: int,
               seed: int = 1) -> dict[str, float]:
    """Runs the file in onnxruntime: max abs difference from PyTorch at ``batch``, and the
    median latency of both at batch 1."""
    from ops_dcnv3.onnxruntime import make_session

    session = make_session(path)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(["output"], {"input": x.numpy()})[0]
    result = {"max_abs_diff": float(np.abs(got - expected).max())}
    if runs > 0:
        x1_np = x[:1].numpy().copy()
        result["ort_ms"] = median_ms(lambda: session.run(["output"], {"input": x1_np}), runs)
    return result


def torch_latency(model: torch.nn.Module, size: int, runs: int) -> float:
    """Median eager PyTorch latency at batch 1 (compiled DCNv3 kernel)."""
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return median_ms(lambda: model(x), runs)


def tensorrt_available() -> bool:
    """Whether the TensorRT Python package is importable. A bare ``import tensorrt`` is not
    proof: from the repository root it finds our ``tensorrt/`` folder (the plugin sources)
    as a namespace package."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


def trt_command(onnx_path: str, size: int, dynamic_batch: bool, batch: int) -> str:
    engine = os.path.splitext(onnx_path)[0] + ".engine"
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine}",
            f"--staticPlugins={TRT_PLUGIN_LIB}", "--fp16"]
    if dynamic_batch:
        args += [f"--minShapes=input:1x3x{size}x{size}", f"--optShapes=input:{batch}x3x{size}x{size}",
                 f"--maxShapes=input:{max(batch, 8)}x3x{size}x{size}"]
    return shlex.join(args)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from classification.models.checkpoint import add_trust_argument, apply_trust_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", default="internimage_t_1k_224", help="a published timm name")
    parser.add_argument("--ckpt_dir", default=None, help="folder holding <model_name>.pth")
    add_trust_argument(parser)  # --trust-checkpoint
    parser.add_argument("--onnx", action="store_true", help="export to ONNX and check it in onnxruntime")
    parser.add_argument("--trt", action="store_true",
                        help="export the plugin form and print the trtexec command (needs TensorRT)")
    parser.add_argument("--form", choices=(*FORMS, "both"), default="portable",
                        help="portable: standard ONNX ops only; plugin: mmdeploy::TRTDCNv3 nodes")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the export and the check")
    parser.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input size (default: the name's suffix, e.g. 224)")
    parser.add_argument("--opset", type=int, default=19,
                        help="ONNX opset; the portable form exports DCNv3 as DeformConv from 19, "
                             "as GridSample at 16-18")
    parser.add_argument("--output-dir", default=None,
                        help="where the .onnx files go (default: --ckpt_dir or .)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs for the latency medians (0: skip)")
    args = parser.parse_args(argv)
    apply_trust_argument(args.trust_checkpoint)
    if not (args.onnx or args.trt):
        parser.error("nothing to do: pass --onnx and/or --trt")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trt:
        if not tensorrt_available():
            print("error: --trt needs TensorRT (the `tensorrt` Python package and trtexec), which is "
                  "not installed here and cannot be installed on these machines.\n"
                  "On a machine with TensorRT 10: build the plugin (tensorrt/README.md), export the "
                  "plugin form with --onnx --form plugin, then run:\n  "
                  + trt_command(os.path.join(args.output_dir or args.ckpt_dir or ".",
                                             f"{args.model_name}_plugin.onnx"),
                                args.img_size or image_size(args.model_name), args.dynamic_batch,
                                args.batch), file=sys.stderr)
            return 2
    size = args.img_size or image_size(args.model_name)
    out_dir = args.output_dir or args.ckpt_dir or "."
    os.makedirs(out_dir, exist_ok=True)
    model, _ = build(args.model_name, args.ckpt_dir)
    forms = list(FORMS) if args.form == "both" else [args.form]
    if args.trt and "plugin" not in forms:
        forms.append("plugin")
    results: dict[str, dict[str, float]] = {}
    # Timed before any onnxruntime session exists: their thread pools would compete.
    torch_ms = torch_latency(model, size, args.runs) if args.runs > 0 else None
    if torch_ms is not None:
        print(f"PyTorch eager latency, batch 1, {size}x{size}, median of {args.runs}: {torch_ms:.1f} ms")
    for form in forms:
        path = os.path.join(out_dir, f"{args.model_name}_{form}.onnx")
        start = time.perf_counter()
        export_onnx(model, path, form, args.batch, size, args.dynamic_batch, args.opset)
        print(f"[{form}] wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) "
              f"in {time.perf_counter() - start:.1f} s")
        # A dynamic batch is checked at a batch other than the exported one.
        check_batch = args.batch + 2 if args.dynamic_batch else args.batch
        result = check_onnx(model, path, check_batch, size, args.runs)
        results[form] = result
        print(f"[{form}] onnxruntime vs PyTorch, batch {check_batch}: max abs diff "
              f"{result['max_abs_diff']:.3g}")
        if "ort_ms" in result:
            print(f"[{form}] onnxruntime latency, batch 1, {size}x{size}, median of {args.runs}: "
                  f"{result['ort_ms']:.1f} ms (PyTorch {torch_ms:.1f} ms)")
        if args.trt and form == "plugin":
            print("TensorRT engine:\n  " + trt_command(path, size, args.dynamic_batch, args.batch))
    worst = max(r["max_abs_diff"] for r in results.values())
    if worst > 1e-3:
        print(f"error: onnxruntime differs from PyTorch by {worst:.3g} (> 1e-3)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
