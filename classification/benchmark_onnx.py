"""The deployment path: InternImage-T exported to ONNX and run in onnxruntime (CPU),
against PyTorch eager in the same run.

    python -m classification.benchmark_onnx [--img-size 224] [--runs 15] [--opset 19]

Exports both DCNv3 forms (classification/export.py: ``portable``, standard operators;
``plugin``, ``mmdeploy::TRTDCNv3`` nodes as onnxruntime gets them from
``ops_dcnv3.onnxruntime.make_session``), checks each against PyTorch, then times batch-1
latency of PyTorch and of both sessions one call each in turn (the medians compared, as
every benchmark here does), all on the same number of threads. The sessions run with
onnxruntime's default options, as a deployment gets them (its workers spin between
operators); a pause before each timed call lets the previous engine's workers go idle.
The portable form without spinning is timed beside them, for information. Prints the
ratios (PyTorch latency / onnxruntime latency: above 1 is faster than PyTorch) and
PASS/MISS per target."""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Callable

import torch

from classification import export
from ops_dcnv3.bench_report import Target, interleaved_medians, machine_summary, report

TARGET_PORTABLE = 0.8  # portable onnxruntime speed over PyTorch eager's
TARGET_PLUGIN = 0.95  # plugin form over the portable form (no slower, up to noise)
SETTLE_S = 0.05  # pause before each timed call: onnxruntime's and PyTorch's workers stop spinning


def _session(path: str, threads: int, spinning: bool = True):
    import onnxruntime as ort

    from ops_dcnv3.onnxruntime import make_session

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return make_session(path, sess_options=options)


def _call(session, feed: dict) -> Callable[[], object]:
    return lambda: session.run(["output"], feed)


def main(argv: list[str] | None = None, print_machine: bool = True) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="internimage_t_1k_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=15, help="timed calls per engine")
    parser.add_argument("--opset", type=int, default=19)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if print_machine:
        print(machine_summary(), flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights are fine for timing
        model, _ = export.build(args.model_name, None)
    x = torch.randn(1, 3, args.img_size, args.img_size)
    feed = {"input": x.numpy()}
    engines = {"pytorch": lambda: model(x)}
    with tempfile.TemporaryDirectory() as folder:
        for form in export.FORMS:
            path = os.path.join(folder, f"{form}.onnx")
            export.export_onnx(model, path, form, 1, args.img_size, False, args.opset)
            session = _session(path, threads)
            with torch.no_grad():
                diff = float(abs(session.run(["output"], feed)[0] - model(x).numpy()).max())
            if diff > 1e-3:
                raise RuntimeError(f"the {form} export differs from PyTorch by {diff:.3g}")
            engines[form] = _call(session, feed)
            if form == "portable":
                engines["portable_nospin"] = _call(_session(path, threads, spinning=False), feed)
        print(f"batch 1, {args.img_size}x{args.img_size}, opset {args.opset}, {threads} threads, "
              f"median of {args.runs} calls each, the engines' calls alternating", flush=True)
        with torch.no_grad():
            seconds = interleaved_medians(engines, args.runs, warmup=2, settle=SETTLE_S)
    ms = {name: 1e3 * value for name, value in seconds.items()}
    result = {f"{name}_ms": value for name, value in ms.items()}
    result["portable_vs_pytorch"] = ms["pytorch"] / ms["portable"]
    result["plugin_vs_portable"] = ms["portable"] / ms["plugin"]
    print(f"PyTorch eager {ms['pytorch']:.1f} ms | onnxruntime portable {ms['portable']:.1f} ms "
          f"({result['portable_vs_pytorch']:.2f}x PyTorch's speed) | plugin {ms['plugin']:.1f} ms "
          f"({result['plugin_vs_portable']:.2f}x portable's) | portable without spinning "
          f"{ms['portable_nospin']:.1f} ms ({ms['pytorch'] / ms['portable_nospin']:.2f}x)")
    return result


def targets(result: dict[str, float]) -> list[Target]:
    return [Target("onnxruntime portable form speed / PyTorch eager", result["portable_vs_pytorch"], ">=",
                   TARGET_PORTABLE),
            Target("onnxruntime plugin form speed / portable form", result["plugin_vs_portable"], ">=",
                   TARGET_PLUGIN)]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
