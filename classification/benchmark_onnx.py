"""The deployment path: InternImage-T exported to ONNX and run in onnxruntime (CPU),
against PyTorch eager in the same run.

    python -m classification.benchmark_onnx [--img-size 224] [--runs 10] [--opset 19]

Exports both DCNv3 forms (classification/export.py: ``portable``, standard operators;
``plugin``, ``mmdeploy::TRTDCNv3`` nodes as onnxruntime gets them from
``ops_dcnv3.onnxruntime.make_session``), checks each against PyTorch, then times batch-1
latency of PyTorch and of both sessions in alternating blocks, all on the same number of
threads. Prints the ratios (PyTorch latency / onnxruntime latency: above 1 is faster than
PyTorch) and PASS/MISS per target."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch

from classification import export
from ops_dcnv3.bench_report import Target, machine_summary, report

TARGET_PORTABLE = 0.8  # portable onnxruntime speed over PyTorch eager's
TARGET_PLUGIN = 0.95  # plugin form over the portable form (no slower, up to noise)


def _session(path: str, threads: int):
    import onnxruntime as ort

    from ops_dcnv3.onnxruntime import make_session

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # idle onnxruntime workers must not spin while PyTorch's block runs (and vice versa)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return make_session(path, sess_options=options)


def main(argv: list[str] | None = None, print_machine: bool = True) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="internimage_t_1k_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per block")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per engine")
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
            engines[form] = (lambda s: lambda: s.run(["output"], feed))(session)
        print(f"batch 1, {args.img_size}x{args.img_size}, opset {args.opset}, {threads} threads, "
              f"median of {args.runs}, best of {args.rounds} rounds", flush=True)
        best = {name: float("inf") for name in engines}
        with torch.no_grad():
            for _ in range(args.rounds):
                for name, run in engines.items():
                    time.sleep(0.2)  # let the previous engine's workers go idle
                    best[name] = min(best[name], export.median_ms(run, args.runs))
    result = {f"{name}_ms": ms for name, ms in best.items()}
    result["portable_vs_pytorch"] = best["pytorch"] / best["portable"]
    result["plugin_vs_portable"] = best["portable"] / best["plugin"]
    print(f"PyTorch eager {best['pytorch']:.1f} ms | onnxruntime portable {best['portable']:.1f} ms "
          f"({result['portable_vs_pytorch']:.2f}x PyTorch's speed) | plugin {best['plugin']:.1f} ms "
          f"({result['plugin_vs_portable']:.2f}x portable's)")
    return result


def targets(result: dict[str, float]) -> list[Target]:
    return [Target("onnxruntime portable form speed / PyTorch eager", result["portable_vs_pytorch"], ">=",
                   TARGET_PORTABLE),
            Target("onnxruntime plugin form speed / portable form", result["plugin_vs_portable"], ">=",
                   TARGET_PLUGIN)]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
