"""CPU inference time of UperNet InternImage-T against mmseg's UperNet R50 on one
512x512 image, measured in the same run, and their ratio.

    python segmentation/benchmark.py [--repeats 3] [--threads N]

Both models have random weights (timing does not depend on them), run in eval mode
under ``torch.inference_mode`` on the full inference path (backbone, decode head,
upsampling to 512x512; auxiliary heads left out)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp
import time

import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmseg_custom.complexity import SegmentorLogits, build_segmentor

from dense_common.cli import load_config
from ops_dcnv3.bench_report import Target, machine_summary, report

HERE = osp.dirname(osp.abspath(__file__))
INTERNIMAGE_T = osp.join(HERE, "configs", "ade20k", "upernet_internimage_t_512_160k_ade20k.py")
R50 = "mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py"
SIZE = 512
# The two segmentors have about the same FLOPs (published: 944 G vs ~950 G at 2048x512), so
# InternImage-T may take at most this multiple of R50's time.
TARGET_RATIO = 1.5


def time_models(models: dict[str, torch.nn.Module], repeats: int) -> dict[str, float]:
    """Median seconds per 512x512 image for each model, after one warm-up run each. The
    models take turns, so a change in machine load hits both alike."""
    x = torch.rand(1, 3, SIZE, SIZE)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_default_scope("mmseg")
    print(machine_summary(), flush=True)
    torch.manual_seed(0)
    models = {"internimage_t": SegmentorLogits(build_segmentor(load_config(INTERNIMAGE_T))),
              "r50": SegmentorLogits(build_segmentor(get_config(R50)))}
    seconds = time_models(models, args.repeats)
    result = dict(internimage_t_ms=seconds["internimage_t"] * 1e3, r50_ms=seconds["r50"] * 1e3,
                  ratio=seconds["internimage_t"] / seconds["r50"])
    print(f"CPU, {torch.get_num_threads()} threads, 1x3x{SIZE}x{SIZE}, median of {args.repeats}:")
    print(f"  UperNet InternImage-T: {result['internimage_t_ms']:.0f} ms")
    print(f"  UperNet R50 (mmseg):   {result['r50_ms']:.0f} ms")
    print(f"  ratio InternImage-T / R50: {result['ratio']:.2f}")
    return result


def targets(result: dict[str, float]) -> list[Target]:
    return [Target("UperNet InternImage-T / R50 time", result["ratio"], "<=", TARGET_RATIO, "x")]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
