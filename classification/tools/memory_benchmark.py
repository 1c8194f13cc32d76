"""Peak memory of one InternImage training step under different memory-saving settings.

    python classification/tools/memory_benchmark.py [--cfg configs/internimage_b_1k_224.yaml]
        [--batch-size 2] [--settings plain checkpoint zero2_offload ...]

Each setting runs in its own subprocess (so ru_maxrss is that setting's peak): build the
model, one forward/backward/optimizer step, then report peak resident memory (and the CUDA
peak when a GPU is present). Settings:

- ``plain``          DDP (world of one) + AdamW, like main.py
- ``checkpoint``     the same with gradient checkpointing (TRAIN.USE_CHECKPOINT)
- ``zero2``          DeepSpeed ZeRO-2 (main_deepspeed's engine setup)
- ``zero2_offload``  ZeRO-2 with the optimizer state offloaded to CPU

On a CPU-only machine "offload" moves nothing off the device, so expect no saving there.
A setting that fails is reported with its error and makes the script exit with status 1
(after the table of the others)."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

SETTINGS = ("plain", "checkpoint", "zero2", "zero2_offload")
DEFAULT_CFG = os.path.join(_ROOT, "classification", "configs", "internimage_b_1k_224.yaml")


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_setting(setting: str, cfg: str, batch_size: int) -> dict:
    """One training step in this process; returns the memory figures (MiB)."""
    import torch

    from classification.config import load_config_file
    from classification.main import build_criterion
    from classification.main_deepspeed import (
        build_client_optimizer,
        build_ds_config,
        init_deepspeed_distributed,
    )
    from classification.models import build_model
    from classification.utils import leave_process_group_at_exit

    config = load_config_file(
        cfg, ["DATA.BATCH_SIZE", str(batch_size), "TRAIN.USE_CHECKPOINT", str(setting == "checkpoint")]
    )
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    images = torch.randn(batch_size, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE, device=device)
    targets = torch.randint(0, config.MODEL.NUM_CLASSES, (batch_size,), device=device)
    criterion = build_criterion(config, None)
    optimizer = build_client_optimizer(config, model)
    after_build = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    if setting.startswith("zero2"):
        import deepspeed

        init_deepspeed_distributed(device.type)
        offload = "cpu" if setting == "zero2_offload" else "none"
        ds = build_ds_config(config, 1, device, zero_stage=2, offload_optimizer=offload)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
        loss = criterion(engine(images), targets)
        engine.backward(loss)
        engine.step()
    else:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
        leave_process_group_at_exit()
        ddp = DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
        loss = criterion(ddp(images), targets)
        loss.backward()
        optimizer.step()
    result = {
        "setting": setting,
        "params_m": params / 1e6,
        "batch_size": batch_size,
        "rss_after_build_mib": after_build,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "step_s": time.time() - start,
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default=DEFAULT_CFG)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # child: one setting, one JSON line
        print("RESULT " + json.dumps(run_setting(args.worker, args.cfg, args.batch_size)), flush=True)
        return []
    rows, failed = [], []
    for setting in args.settings:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            setting,
            "--cfg",
            args.cfg,
            "--batch-size",
            str(args.batch_size),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{setting}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            failed.append(setting)
            continue
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
    cuda = any("cuda_peak_mib" in r for r in rows)
    header = f"{'setting':<15}{'params(M)':>10}{'batch':>7}{'rss build':>11}{'peak rss':>10}{'step s':>8}"
    print(header + (f"{'cuda peak':>11}" if cuda else "") + "   (MiB)")
    for r in rows:
        line = (
            f"{r['setting']:<15}{r['params_m']:>10.1f}{r['batch_size']:>7}{r['rss_after_build_mib']:>11.0f}"
            f"{r['peak_rss_mib']:>10.0f}{r['step_s']:>8.1f}"
        )
        print(line + (f"{r.get('cuda_peak_mib', float('nan')):>11.0f}" if cuda else ""))
    if failed:
        raise SystemExit(f"memory_benchmark: {len(failed)} setting(s) failed: {', '.join(failed)}")
    return rows


if __name__ == "__main__":
    main()
