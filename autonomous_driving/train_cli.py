"""The one ``tools/train.py`` of the three driving baselines (each baseline's script names
its registrations, description and published flag set, and calls :func:`main`).

The published flags (mmdet3d ``tools/train.py``) map onto mmengine as in the detection tree
(``detection/train.py``, whose config assembly this shares): ``--resume-from CKPT`` is
``--resume CKPT``, ``--no-validate`` drops the validation loop, ``--seed`` /
``--deterministic`` set ``randomness``, ``--options`` is ``--cfg-options``, ``--autoscale-lr``
scales the lr by the total batch over ``auto_scale_lr.base_batch_size``, ``--gpus N`` /
``--gpu-ids`` pick the one GPU of a non-distributed run. Without CUDA, ``--launcher pytorch``
(``dist_train.sh``) trains data-parallel over gloo and ``--amp`` is bfloat16 autocast. Work
dirs default to ``$INTERNIMAGE_OUTPUT/work_dirs/<config name>``."""

from __future__ import annotations

import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common.cli import add_published_train_flags, fail, select_gpu, set_local_rank
from dense_common.cpu_training import adapt_to_cpu
from detection.train import build_cfg as build_detection_train_cfg


def parse_args(argv: list[str] | None, *, model: str, example_config: str,
               published: str) -> argparse.Namespace:
    """The command line of ``tools/train.py``; ``published`` names the flag set
    (``dense_common.cli.add_published_train_flags``)."""
    parser = argparse.ArgumentParser(description=f"Train {model} (mmengine).")
    parser.add_argument("config", help=f"config file, e.g. {example_config}")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: see above)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                        help="resume from CKPT, or from the newest checkpoint of the work dir when no path")
    parser.add_argument("--amp", action="store_true", help="mixed-precision training (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", "--autoscale-lr", dest="auto_scale_lr", action="store_true",
                        help="scale the lr by the total batch size over auto_scale_lr.base_batch_size")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_epochs=1")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    add_published_train_flags(parser, published)
    parser.add_argument("--gpus", type=int, help="published: GPUs of a non-distributed run (one is used)")
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def build_cfg(args: argparse.Namespace) -> Config:
    """The run's config: the detection tree's flag handling, plus the published ``--gpus``."""
    if args.gpus is not None:
        if args.gpus < 1:
            raise fail(f"--gpus must be >= 1, got {args.gpus}")
        if args.gpus > 1:
            print(f"--gpus {args.gpus}: a non-distributed run uses one GPU; for {args.gpus} use "
                  f"tools/dist_train.sh CONFIG {args.gpus}")
    return build_detection_train_cfg(args)


def main(args: argparse.Namespace) -> None:
    """Trains as ``args`` says (see the module docstring)."""
    set_local_rank(args.local_rank)
    select_gpu(args.gpu_id, args.gpu_ids)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # gloo / bf16 autocast where there is no GPU
        print(note, flush=True)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    runner.train()
    print(f"work dir: {osp.abspath(cfg.work_dir)}")
