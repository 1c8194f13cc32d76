"""DCNv3 kernel vs the pure-PyTorch reference on InternImage-T's four level shapes.

    python -m ops_dcnv3.benchmark [--batch 8] [--repeat 5] [--device cpu|cuda] [--dtype float32]

Every row times both implementations in the same run and prints their ratio (these
machines are noisy; only ratios taken side by side mean something)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from .bench_report import Target, machine_summary, report
from .ops import dcnv3, kernel_available
from .reference import dcnv3_core_pytorch

# Level-0 speed-ups of the compiled kernel over the reference that `make bench` requires.
TARGET_FORWARD = 10.0
TARGET_FORWARD_BACKWARD = 5.0

# (H=W, C, groups) of InternImage-T's levels at 224x224.
T_LEVELS = [(56, 64, 4), (28, 128, 8), (14, 256, 16), (7, 512, 32)]
KERNEL = 3


def _inputs(batch: int, size: int, channels: int, group: int, dtype, device):
    points = KERNEL * KERNEL
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size, size, channels, generator=gen)
    offset = torch.randn(batch, size, size, group * points * 2, generator=gen)
    mask = torch.softmax(torch.randn(batch, size, size, group, points, generator=gen), -1)
    mask = mask.reshape(batch, size, size, -1)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (x, offset, mask)]


def _median_ms(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_level(batch: int, size: int, channels: int, group: int, repeat: int, device: torch.device,
               dtype: torch.dtype) -> dict[str, float]:
    """Median times (ms) of the reference and the kernel, forward and forward+backward."""
    x, offset, mask = _inputs(batch, size, channels, group, dtype, device)
    args = (KERNEL, KERNEL, 1, 1, 1, 1, 1, 1, group, channels // group, 1.0)
    grad = torch.randn(batch, size, size, channels, device=device, dtype=dtype)

    def kernel():
        return dcnv3(x, offset, mask, *args, 256, False)

    def reference():
        return dcnv3_core_pytorch(x, offset, mask, *args, False)

    def forward(fn):
        with torch.no_grad():
            return fn()

    def forward_backward(fn):
        return torch.autograd.grad(fn(), (x, offset, mask), grad)

    return {
        "ref_fwd": _median_ms(lambda: forward(reference), repeat, device),
        "ker_fwd": _median_ms(lambda: forward(kernel), repeat, device),
        "ref_fwdbwd": _median_ms(lambda: forward_backward(reference), repeat, device),
        "ker_fwdbwd": _median_ms(lambda: forward_backward(kernel), repeat, device),
    }


def run(batch: int, repeat: int, device: torch.device, dtype: torch.dtype) -> list[dict]:
    if not kernel_available(device):
        raise SystemExit(f"no compiled DCNv3 kernel for {device}; build the extension first")
    rows = []
    for level, (size, channels, group) in enumerate(T_LEVELS):
        row = {"level": level, "shape": f"{batch}x{size}x{size}x{channels} G{group}"}
        row.update(time_level(batch, size, channels, group, repeat, device, dtype))
        rows.append(row)
        print(f"level {level} {row['shape']:>22}: forward {row['ref_fwd']:8.2f} ms ref / "
              f"{row['ker_fwd']:7.2f} ms kernel = {row['ref_fwd'] / row['ker_fwd']:5.1f}x | "
              f"fwd+bwd {row['ref_fwdbwd']:8.2f} ms ref / {row['ker_fwdbwd']:7.2f} ms kernel = "
              f"{row['ref_fwdbwd'] / row['ker_fwdbwd']:5.1f}x", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_summary(), flush=True)
    print(f"DCNv3 benchmark: InternImage-T levels, batch {args.batch}, {args.dtype}, {device} "
          f"({torch.get_num_threads()} threads), kernel 3x3, median of {args.repeat}", flush=True)
    rows = run(args.batch, args.repeat, device, getattr(torch, args.dtype))
    return rows


def targets(rows: list[dict]) -> list[Target]:
    """The level-0 speed-ups against their targets."""
    level0 = rows[0]
    return [Target("DCNv3 level-0 forward, kernel / reference", level0["ref_fwd"] / level0["ker_fwd"], ">=",
                   TARGET_FORWARD, "x"),
            Target("DCNv3 level-0 forward+backward, kernel / reference",
                   level0["ref_fwdbwd"] / level0["ker_fwdbwd"], ">=", TARGET_FORWARD_BACKWARD, "x")]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
