"""InternImage-T against timm's ConvNeXt-T, measured in one run: inference throughput in
float32 and under bfloat16 autocast, and one training step.

    python -m classification.benchmark [--suite float32 bfloat16 train] [--batch 8]
                                       [--img-size 224] [--repeat 10] [--threads N]

Prints images/s (steps/s for ``train``) of both and their ratio per suite, then one
PASS/MISS line per target. The anchor's runs alternate with the model's and each one's
median counts, since absolute times on shared machines mean little and drift within
seconds. ``bfloat16`` runs both models under
``torch.autocast('cpu', torch.bfloat16)`` (AMX where the CPU has it); ``train`` is
classification/benchmark_train.py (forward, backward, AdamW)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import timm
import torch

from classification import benchmark_train
from classification.models import InternImage
from classification.models.variants import VARIANTS
from ops_dcnv3.bench_report import Target, interleaved_medians, machine_summary, report

# InternImage-T images/s over ConvNeXt-T's, same run, per inference dtype.
TARGET_RATIO = {"float32": 0.9, "bfloat16": 0.9}
SUITES = ("float32", "bfloat16", "train")


def _autocast(dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bfloat16":
        return torch.autocast("cpu", torch.bfloat16)
    return contextlib.nullcontext()


def forward_pass(model: torch.nn.Module, batch: torch.Tensor, dtype: str = "float32") -> Callable[[], None]:
    """One inference forward of ``model`` on ``batch`` (autocast for bfloat16), as a callable
    to time."""

    def run() -> None:
        with torch.inference_mode(), _autocast(dtype):
            model(batch)

    return run


def inference(dtype: str, batch_size: int, img_size: int, repeat: int, anchor_name: str) -> dict:
    torch.manual_seed(0)
    batch = torch.randn(batch_size, 3, img_size, img_size)
    model = InternImage(**VARIANTS["t"]).eval()
    anchor = timm.create_model(anchor_name).eval()
    print(f"inference, {dtype}, batch {batch_size}, {img_size}x{img_size}, "
          f"{torch.get_num_threads()} threads, median of {repeat} runs each, the two models' "
          "runs alternating", flush=True)
    # two warm-up runs each: allocator, oneDNN primitive caches
    medians = interleaved_medians({"internimage_t": forward_pass(model, batch, dtype),
                                   anchor_name: forward_pass(anchor, batch, dtype)}, repeat, warmup=2)
    result = {"dtype": dtype, **{name: batch_size / seconds for name, seconds in medians.items()}}
    result["ratio"] = result["internimage_t"] / result[anchor_name]
    print(f"InternImage-T {result['internimage_t']:.2f} img/s | {anchor_name} "
          f"{result[anchor_name]:.2f} img/s | ratio {result['ratio']:.2f} ({dtype})", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per model (the "
                        "training step takes at most 6)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--anchor", default="convnext_tiny", help="timm model to compare with")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_summary(), flush=True)
    results = {}
    for suite in args.suite:
        if suite == "train":
            results[suite] = benchmark_train.main(
                ["--batch", str(args.batch), "--img-size", str(args.img_size), "--repeat",
                 str(min(args.repeat, 6)), "--anchor", args.anchor], print_machine=False)
        else:
            results[suite] = inference(suite, args.batch, args.img_size, args.repeat, args.anchor)
    return results


def targets(results: dict[str, dict]) -> list[Target]:
    found = []
    for suite, result in results.items():
        if suite == "train":
            found += benchmark_train.targets(result)
        else:
            found.append(Target(f"InternImage-T / ConvNeXt-T inference throughput, {suite}",
                                result["ratio"], ">=", TARGET_RATIO[suite]))
    return found


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
