"""DCNv3 kernel vs the pure-PyTorch reference on InternImage-T's four level shapes, and
the multi-scale deformable attention kernel vs the grid_sample fallback at a DINO encoder
and a BEVFormer temporal self-attention shape.

    python -m ops_dcnv3.benchmark [--batch 8] [--repeat 5] [--device cpu|cuda] [--dtype float32]

Every row times both implementations in the same run, one call of each in turn, and
prints the ratio of their medians (these machines are noisy; only ratios taken side by
side mean something)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from .bench_report import Target, interleaved_medians, machine_summary, report
from .msda import kernel_available as msda_kernel_available
from .msda import level_start_index_of, multi_scale_deformable_attn, multi_scale_deformable_attn_reference
from .ops import dcnv3, kernel_available
from .reference import dcnv3_core_pytorch

# Level-0 speed-ups of the compiled kernel over the reference that `make bench` requires.
TARGET_FORWARD = 10.0
TARGET_FORWARD_BACKWARD = 5.0

# MSDA shapes: (name, batch, levels (H, W), heads, head_dim, points); queries = keys (self-attention).
MSDA_SHAPES = [
    # DINO's encoder on an 800x1333 image: strides 8/16/32/64, 256 dims, 8 heads, 4 points.
    ("DINO encoder 800x1333", 1, ((100, 167), (50, 84), (25, 42), (13, 21)), 8, 32, 4),
    # BEVFormer temporal self-attention: 50x50 BEV, one level, 4 points.
    ("BEVFormer TSA 50x50", 2, ((50, 50),), 8, 32, 4),
]
# Speed-ups of the MSDA kernel over the grid_sample fallback that `make bench` requires.
MSDA_TARGET_FORWARD = 10.0
MSDA_TARGET_FORWARD_BACKWARD = 5.0

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


def _reference_vs_kernel(reference: Callable[[], torch.Tensor], kernel: Callable[[], torch.Tensor],
                         inputs: tuple[torch.Tensor, ...], grad: torch.Tensor, repeat: int,
                         device: torch.device) -> dict[str, float]:
    """Median times (ms) of the reference and the kernel, forward and forward+backward, the
    two timed in alternation (one warm-up call each)."""

    def forward(fn):
        with torch.no_grad():
            return fn()

    def forward_backward(fn):
        return torch.autograd.grad(fn(), inputs, grad)

    def timed(phase: Callable, fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            phase(fn)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return run

    result = {}
    for name, phase in (("fwd", forward), ("fwdbwd", forward_backward)):
        medians = interleaved_medians({"ref": timed(phase, reference), "ker": timed(phase, kernel)}, repeat)
        result.update({f"{which}_{name}": seconds * 1e3 for which, seconds in medians.items()})
    return result


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

    return _reference_vs_kernel(reference, kernel, (x, offset, mask), grad, repeat, device)


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


def _msda_inputs(batch: int, levels, heads: int, head_dim: int, points: int, dtype, device):
    keys = sum(h * w for h, w in levels)
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(batch, keys, heads, head_dim, generator=gen)
    # Self-attention as in DINO's encoder and BEVFormer: one query per key, sampling around its
    # own normalised position in every level, a few pixels away (some points fall outside).
    centres = torch.cat([torch.stack(torch.meshgrid((torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h,
                                                    indexing="xy"), -1).reshape(-1, 2) for h, w in levels])
    level_wh = torch.tensor([[w, h] for h, w in levels], dtype=torch.float32)
    offsets = torch.randn(batch, keys, heads, len(levels), points, 2, generator=gen) * 2.0 / level_wh[:, None]
    loc = centres[None, :, None, None, None] + offsets
    weights = torch.softmax(torch.randn(batch, keys, heads, len(levels) * points, generator=gen), -1)
    weights = weights.view(batch, keys, heads, len(levels), points)
    tensors = [t.to(device=device, dtype=dtype).requires_grad_() for t in (value, loc, weights)]
    shapes = torch.tensor(levels, device=device)
    return tensors, shapes, level_start_index_of(shapes)


def time_msda(batch: int, levels, heads: int, head_dim: int, points: int, repeat: int,
              device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Median times (ms) of the grid_sample fallback and the kernel, forward and forward+backward."""
    (value, loc, weights), shapes, starts = _msda_inputs(batch, levels, heads, head_dim, points, dtype,
                                                         device)
    grad = torch.randn(batch, loc.shape[1], heads * head_dim, device=device, dtype=dtype)

    def kernel():
        return multi_scale_deformable_attn(value, shapes, starts, loc, weights, 64)

    def fallback():
        return multi_scale_deformable_attn_reference(value, shapes, loc, weights)

    return _reference_vs_kernel(fallback, kernel, (value, loc, weights), grad, repeat, device)


def run_msda(repeat: int, device: torch.device, dtype: torch.dtype) -> list[dict]:
    if not msda_kernel_available(device):
        raise SystemExit(f"no compiled MSDA kernel for {device}; build the extension first")
    rows = []
    for name, batch, levels, heads, head_dim, points in MSDA_SHAPES:
        row = {"op": "msda", "shape": name, "batch": batch, "levels": len(levels)}
        row.update(time_msda(batch, levels, heads, head_dim, points, repeat, device, dtype))
        rows.append(row)
        print(f"MSDA {name:>22} (bs {batch}, {len(levels)} level{'s' if len(levels) > 1 else ''}): forward "
              f"{row['ref_fwd']:8.2f} ms fallback / {row['ker_fwd']:7.2f} ms kernel = "
              f"{row['ref_fwd'] / row['ker_fwd']:5.1f}x | fwd+bwd {row['ref_fwdbwd']:8.2f} ms fallback / "
              f"{row['ker_fwdbwd']:7.2f} ms kernel = {row['ref_fwdbwd'] / row['ker_fwdbwd']:5.1f}x",
              flush=True)
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
    print(f"MSDA benchmark: {args.dtype}, {device}, median of {args.repeat}", flush=True)
    rows += run_msda(args.repeat, device, getattr(torch, args.dtype))
    return rows


def targets(rows: list[dict]) -> list[Target]:
    """The DCNv3 level-0 and the MSDA speed-ups against their targets."""
    level0 = rows[0]
    return [Target("DCNv3 level-0 forward, kernel / reference", level0["ref_fwd"] / level0["ker_fwd"], ">=",
                   TARGET_FORWARD, "x"),
            Target("DCNv3 level-0 forward+backward, kernel / reference",
                   level0["ref_fwdbwd"] / level0["ker_fwdbwd"], ">=", TARGET_FORWARD_BACKWARD, "x")] + [
        target
        for row in rows if row.get("op") == "msda"
        for target in (
            Target(f"MSDA {row['shape']} forward, kernel / grid_sample", row["ref_fwd"] / row["ker_fwd"],
                   ">=", MSDA_TARGET_FORWARD, "x"),
            Target(f"MSDA {row['shape']} forward+backward, kernel / grid_sample",
                   row["ref_fwdbwd"] / row["ker_fwdbwd"], ">=", MSDA_TARGET_FORWARD_BACKWARD, "x"))]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
