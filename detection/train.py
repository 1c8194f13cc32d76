"""Train a detector from an mmdet 3 config.

    python detection/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

``--resume`` without a path resumes from the newest checkpoint in the work dir. Without CUDA,
``--launcher pytorch`` (dist_train.sh) trains data-parallel over gloo and ``--amp`` is
bfloat16 autocast (dense_common/cpu_training.py).

Published (mmdet 2) flags, mapped onto mmengine: ``--resume-from CKPT`` is ``--resume CKPT``,
``--auto-resume`` is ``--resume``, ``--no-validate`` drops the validation loop,
``--seed`` / ``--diff-seed`` / ``--deterministic`` set ``randomness``, ``--gpu-id(s)``
makes one GPU visible, ``--options`` is ``--cfg-options``."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common.cli import (
    add_published_train_flags,
    apply_train_flags,
    default_work_dir,
    fail,
    load_config,
    one_of,
    resolve_resume,
    select_gpu,
    set_local_rank,
)
from dense_common.cpu_training import adapt_to_cpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an InternImage detector (mmdet 3).")
    parser.add_argument("config", help="config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default ./work_dirs/<config>)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                        help="resume from CKPT, or from the newest checkpoint of the work dir when no path")
    parser.add_argument("--amp", action="store_true", help="mixed-precision training (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by the batch size over the config's auto_scale_lr.base_batch_size")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_epochs=1")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    add_published_train_flags(parser, "mmdet 2")
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def build_cfg(args: argparse.Namespace) -> Config:
    resolve_resume(args)
    cfg = load_config(args.config, one_of(args.cfg_options, args.options, "--cfg-options", "--options"))
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
        if wrapper not in ("OptimWrapper", "AmpOptimWrapper"):
            raise fail(f"--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper}")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.auto_scale_lr:
        if "base_batch_size" not in (cfg.get("auto_scale_lr") or {}):
            raise fail("--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config")
        cfg.auto_scale_lr.enable = True
    apply_train_flags(cfg, args)
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    select_gpu(args.gpu_id, args.gpu_ids)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # gloo / bf16 autocast where there is no GPU
        print(note, flush=True)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    runner.train()
    print(f"work dir: {osp.abspath(cfg.work_dir)}")


if __name__ == "__main__":
    main()
