"""Train a segmentor with mmengine's Runner (mmseg 1.x configs).

    python segmentation/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

``--resume`` without a value continues from the newest checkpoint in the work dir;
with a value, from that checkpoint (weights, optimizer, schedulers, iteration). Without CUDA,
``--launcher pytorch`` (dist_train.sh) trains data-parallel over gloo and ``--amp`` is
bfloat16 autocast (dense_common/cpu_training.py).

Published (mmseg 0.x) flags, mapped onto mmengine: ``--load-from CKPT`` starts from those
weights (``load_from``), ``--resume-from CKPT`` is ``--resume CKPT``, ``--auto-resume`` is
``--resume``, ``--no-validate`` drops the validation loop, ``--seed`` / ``--diff-seed`` /
``--deterministic`` set ``randomness``, ``--gpu-id(s)`` makes one GPU visible,
``--options`` is ``--cfg-options``."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

import mmseg_custom  # noqa: F401 - registrations and checkpoint shims, also for configs without custom_imports
from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common.cli import (
    add_published_train_flags,
    apply_train_flags,
    default_work_dir,
    load_config,
    one_of,
    resolve_resume,
    select_gpu,
    set_local_rank,
)
from dense_common.cpu_training import adapt_to_cpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a segmentor (InternImage, mmseg 1.x)")
    parser.add_argument("config", help="config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                        help="resume from CKPT, or (no value) from the latest checkpoint in the work dir")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, e.g. train_cfg.max_iters=1000")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)  # set by older launchers
    add_published_train_flags(parser, "mmseg 0.x", load_from=True)
    args = parse_args_with_trust(parser, argv)  # adds --trust-checkpoint
    set_local_rank(args.local_rank)
    return args


def build_cfg(args: argparse.Namespace):
    resolve_resume(args)
    cfg = load_config(args.config, one_of(args.cfg_options, args.options, "--cfg-options", "--options"))
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.launcher = args.launcher
    if args.amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print_log("AMP is already enabled in the config", logger="current")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    apply_train_flags(cfg, args)
    for note in adapt_to_cpu(cfg, args.launcher):  # gloo / bf16 autocast where there is no GPU
        print(note, flush=True)
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    select_gpu(args.gpu_id, args.gpu_ids)
    Runner.from_cfg(build_cfg(args)).train()


if __name__ == "__main__":
    main()
