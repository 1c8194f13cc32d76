"""One training step (forward, cross-entropy backward, AdamW step) of InternImage-T against
timm's ConvNeXt-T, measured in one run.

    python -m classification.benchmark_train [--batch 8] [--img-size 224] [--repeat 6]

(also the ``train`` suite of ``python -m classification.benchmark``, which ``make bench`` runs)

Prints the step time of both and their ratio: the two models' steps alternate and each
model's median counts, since absolute times on shared machines mean little and drift
within seconds. Both models train as the recipes do: train mode, stochastic depth 0.1
for both (the published InternImage-T config's DROP_PATH_RATE and ConvNeXt-T's recipe),
float32, and AdamW as classification/optimizer.py builds it (fused on CPU, for both)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import timm
import torch

from classification.models import InternImage
from classification.models.variants import VARIANTS
from classification.optimizer import cpu_fused_kwargs
from ops_dcnv3.bench_report import SystemUsage, Target, interleaved_medians, machine_summary, report

TARGET_RATIO = 0.95  # InternImage-T steps/s over ConvNeXt-T's, same run


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  labels: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of ``model`` in train mode, as a callable to time."""

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None, print_machine: bool = True) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=6, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--anchor", default="convnext_tiny", help="timm model to compare with")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size)
    labels = torch.randint(0, 1000, (args.batch,))
    model = InternImage(**{**VARIANTS["t"], "drop_path_rate": 0.1})
    anchor = timm.create_model(args.anchor, drop_path_rate=0.1)
    usage = {name: SystemUsage() for name in ("internimage_t", args.anchor)}
    steps = {}
    for name, m in (("internimage_t", model), (args.anchor, anchor)):
        # AdamW as the trainer builds it (classification/optimizer.py: fused on CPU), for both
        params = list(m.parameters())
        fused = cpu_fused_kwargs([{"params": params}])
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **fused)
        steps[name] = usage[name].wrap(training_step(m, optimizer, images, labels))
    if print_machine:
        print(machine_summary(), flush=True)
    print(f"training step (forward, backward, AdamW), float32, batch {args.batch}, "
          f"{args.img_size}x{args.img_size}, {torch.get_num_threads()} threads, median of "
          f"{args.repeat} steps each, the two models' steps alternating", flush=True)
    # Five warm-up steps each (oneDNN primitives, AdamW state, and the allocator: glibc's
    # malloc raises its mmap threshold as large blocks come back, so the page faults of
    # the first steps fade within about four; a training run is timed at its steady state).
    medians = interleaved_medians(steps, args.repeat, warmup=5)
    result = {name: 1.0 / seconds for name, seconds in medians.items()}
    result["ratio"] = result["internimage_t"] / result[args.anchor]
    print(f"InternImage-T {1e3 / result['internimage_t']:.0f} ms/step | {args.anchor} "
          f"{1e3 / result[args.anchor]:.0f} ms/step | ratio {result['ratio']:.2f}")
    # Why a ratio can swing between runs: steps that fault in fresh pages pay the kernel
    # (system time), and what that costs drifts with the host; user time is the model's work.
    spent = {name: u.medians(args.repeat) for name, u in usage.items()}
    if all(spent.values()):
        print("CPU time per step, all threads (medians): " + " | ".join(
            f"{name} user {s.user_seconds * 1e3:.0f} ms, system {s.system_seconds * 1e3:.0f} ms, "
            f"{s.page_faults:.0f} page faults" for name, s in spent.items()))
    return result


def targets(result: dict[str, float]) -> list[Target]:
    return [Target("InternImage-T / ConvNeXt-T training-step throughput", result["ratio"], ">=",
                   TARGET_RATIO)]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
