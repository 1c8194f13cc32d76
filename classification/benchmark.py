"""Inference throughput of InternImage-T against timm's ConvNeXt-T, measured in one run.

    python -m classification.benchmark [--batch 8] [--img-size 224] [--repeat 5]

Prints images/s of both and their ratio (the anchor is measured beside the model,
since absolute times on shared machines mean little)."""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from classification.models import InternImage
from classification.models.variants import VARIANTS
from ops_dcnv3.bench_report import Target, machine_summary, report

TARGET_RATIO = 0.9  # InternImage-T images/s over ConvNeXt-T's, same run


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, repeat: int) -> float:
    with torch.inference_mode():
        for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
            model(batch)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return batch.shape[0] / statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--anchor", default="convnext_tiny", help="timm model to compare with")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.randn(args.batch, 3, args.img_size, args.img_size)
    model = InternImage(**VARIANTS["t"]).eval()
    anchor = timm.create_model(args.anchor).eval()
    size = f"{args.img_size}x{args.img_size}"
    threads = torch.get_num_threads()
    print(machine_summary(), flush=True)
    print(f"inference, batch {args.batch}, {size}, {threads} threads, median of {args.repeat}",
          flush=True)
    # Interleave the two so that drifting machine load hits both alike.
    ours, theirs = [], []
    for _ in range(2):
        ours.append(images_per_second(model, batch, args.repeat))
        theirs.append(images_per_second(anchor, batch, args.repeat))
    result = {"internimage_t": max(ours), args.anchor: max(theirs)}
    result["ratio"] = result["internimage_t"] / result[args.anchor]
    print(f"InternImage-T {result['internimage_t']:.2f} img/s | {args.anchor} "
          f"{result[args.anchor]:.2f} img/s | ratio {result['ratio']:.2f}")
    return result


def targets(result: dict[str, float]) -> list[Target]:
    return [Target("InternImage-T / ConvNeXt-T inference throughput", result["ratio"], ">=", TARGET_RATIO)]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
