"""FLOPs and parameters of a segmentor at a given input size.

    python segmentation/get_flops.py CONFIG [--shape H [W]]   (one value: a square input)

mmengine's counter sees every layer except the DCNv3 sampling core (a custom operator);
``dense_common.flops.dcnv3_core_flops`` adds that term. Auxiliary heads (training only)
are left out, as in the published numbers."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmseg_custom.complexity import SegmentorLogits, build_segmentor

from dense_common.cli import load_config, parse_shape
from dense_common.flops import dcnv3_core_flops, model_complexity, uncounted_summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FLOPs/params of a segmentor (DCNv3 core included)")
    parser.add_argument("config", help="config file")
    parser.add_argument("--shape", type=int, nargs="+", default=[512, 512], metavar="H [W]",
                        help="input height and width, one value for a square (default 512 512)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    if len(args.shape) > 2:
        parser.error(f"--shape takes one or two values (H [W]), got {len(args.shape)}")
    args.shape = list(parse_shape(args.shape))
    if min(args.shape) < 32:
        parser.error(f"--shape must be at least 32 x 32 (the backbone's stride), got {args.shape}")
    return args


def count(config: str, shape: tuple[int, int], cfg_options: dict | None = None) -> dict[str, float]:
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = SegmentorLogits(build_segmentor(cfg))
    x = torch.rand(1, 3, *shape)
    info = model_complexity(model, (x,))
    core = dcnv3_core_flops(model, x)
    return dict(flops=info["flops"] + core, dcnv3_core_flops=core, layer_flops=info["flops"],
                params=info["params"], uncounted=info["uncounted"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    result = count(args.config, tuple(args.shape), args.cfg_options)
    h, w = args.shape
    print(f"input shape: 1x3x{h}x{w}")
    print(f"flops: {result['flops'] / 1e9:.2f} G (layers {result['layer_flops'] / 1e9:.2f} G "
          f"+ DCNv3 core {result['dcnv3_core_flops'] / 1e9:.2f} G)")
    print(f"params: {result['params'] / 1e6:.2f} M")
    print(uncounted_summary(result["uncounted"]))
    return result


if __name__ == "__main__":
    main()
