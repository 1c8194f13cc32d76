"""FLOPs and parameters of a detector for one input size: mmengine's operator count plus
the DCNv3 sampling core, which operator counters do not see (dense_common.flops).

    python detection/get_flops.py CONFIG [--shape H [W]] [--size-divisor 32]

``--shape`` takes one value (a square input) or two (H W), default 800 1280; as the
published script, the input is padded up to a multiple of ``--size-divisor`` (default 32,
-1: no padding), the size the detector really runs at."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.analysis.print_helper import _format_size
from torch import nn

from dense_common.cli import fail, load_config, parse_shape
from dense_common.flops import dcnv3_core_flops, model_complexity, uncounted_summary


class TensorMode(nn.Module):
    """The detector's raw forward (``mode='tensor'``) for a fixed batch of one image, so
    the counters can call it with the image tensor alone."""

    def __init__(self, detector: nn.Module, height: int, width: int):
        super().__init__()
        self.detector = detector
        shape = (height, width)
        self.samples = [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                                    batch_input_shape=shape, scale_factor=(1.0, 1.0)))]

    def forward(self, inputs: torch.Tensor):
        return self.detector._forward(inputs, self.samples)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FLOPs of an InternImage detector, DCNv3 included.")
    parser.add_argument("config", help="config file")
    parser.add_argument("--shape", type=int, nargs="+", default=[800, 1280], metavar="H [W]",
                        help="input height and width, one value for a square (default 800 1280)")
    parser.add_argument("--size-divisor", type=int, default=32,
                        help="pad the input up to a multiple of this (-1: no padding)")
    return parser.parse_args(argv)


def padded_shape(height: int, width: int, size_divisor: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``size_divisor`` (unchanged when it is <= 0)."""
    if size_divisor <= 0:
        return height, width
    return -(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor


def count(config: str, height: int, width: int) -> dict:
    """``flops`` (operators + DCNv3 core), ``dcnv3_flops``, ``params`` for one HxW image."""
    if height < 32 or width < 32:
        raise fail(f"--shape must be at least 32x32, got {height}x{width}")
    cfg = load_config(config)
    register_all_modules()
    cfg.model.get("backbone", {}).pop("init_cfg", None)  # no pretrained download to count FLOPs
    model = TensorMode(MODELS.build(cfg.model).eval(), height, width)
    inputs = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        info = model_complexity(model, (inputs,))
    dcn = dcnv3_core_flops(model, inputs)
    return dict(flops=info["flops"] + dcn, dcnv3_flops=dcn, params=info["params"],
                uncounted=info["uncounted"])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    height, width = parse_shape(args.shape)
    if height < 32 or width < 32:
        raise fail(f"--shape must be at least 32x32, got {height}x{width}")
    padded = padded_shape(height, width, args.size_divisor)
    result = count(args.config, *padded)
    line = "=" * 40
    if padded != (height, width):
        print(f"input {height}x{width} padded to {padded[0]}x{padded[1]} "
              f"(--size-divisor {args.size_divisor})")
    print(f"{line}\ninput shape: 1x3x{padded[0]}x{padded[1]}\n"
          f"FLOPs: {_format_size(result['flops'])} (DCNv3 core: {_format_size(result['dcnv3_flops'])})\n"
          f"params: {_format_size(result['params'])}\n{line}")
    print(uncounted_summary(result["uncounted"]))
    return result


if __name__ == "__main__":
    main()
