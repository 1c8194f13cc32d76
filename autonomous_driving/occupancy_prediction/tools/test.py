"""Evaluate a BEVFormer-Occ checkpoint on the config's test set: Occ3D mIoU (and F-score).

    python tools/test.py CONFIG CHECKPOINT [--eval bbox] [--eval_fscore] [--show-dir DIR]
        [--eval-options K=V ...] [--fuse-conv-bn] [--gpu-collect] [--tmpdir DIR] [--seed N]
        [--deterministic] [--work-dir DIR] [--cfg-options K=V ...] [--launcher none|pytorch]

As published, any ``--eval`` value (``dist_test.sh`` appends ``--eval bbox``) evaluates the
occupancy mIoU over the camera mask and prints the per-class IoUs; ``--eval_fscore`` adds
the F-score; ``--show-dir`` writes ``NNNN.npz`` (``pred``, ``gt``, ``sample_token``) per frame.
Unlike the published script a single process (CPU or one GPU) works; ``--launcher pytorch``
(``dist_test.sh``) runs one process per GPU, or over gloo without CUDA. The metrics are
printed and returned. ``--out`` / ``--format-only`` (``assert False`` in the published
script) are refused: ``--show-dir`` is the way to keep predictions. The checkpoint is read
by the repository's safe reader (weights only; ``--trust-checkpoint`` for a full unpickle)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

from mmengine.config import Config, DictAction

import autonomous_driving.occupancy_prediction.bevformer_occ  # noqa: F401 - registrations, safe checkpoint loader
from autonomous_driving.test_cli import apply_run_flags, load_test_config, run_test
from classification.models.checkpoint import parse_args_with_trust
from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    fail,
    one_of,
    set_eval_metrics,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a BEVFormer-Occ checkpoint (Occ3D mIoU / F-score).")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--eval", nargs="+", metavar="METRIC",
                        help="published: any of bbox / mIoU evaluates the occupancy mIoU")
    parser.add_argument("--eval_fscore", "--eval-fscore", dest="eval_fscore", action="store_true",
                        help="also compute the F-score (published Metric_FScore)")
    parser.add_argument("--show-dir", help="write NNNN.npz (pred, gt, sample_token) per frame here")
    parser.add_argument("--eval-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="OccMetric arguments, e.g. use_image_mask=False")
    parser.add_argument("--options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="published alias of --eval-options")
    parser.add_argument("--out", help="refused (as published): use --show-dir for the predictions")
    parser.add_argument("--format-only", action="store_true", help="refused (as published)")
    parser.add_argument("--fuse-conv-bn", action="store_true",
                        help="fold BatchNorms into the preceding convolutions (faster, same outputs)")
    parser.add_argument("--gpu-collect", action="store_true", help="gather the results over GPUs (nccl)")
    parser.add_argument("--tmpdir", help="where ranks leave their results for rank 0 (CPU collection)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument("--work-dir", help="where the evaluation logs go")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def build_cfg(args: argparse.Namespace) -> Config:
    if args.out is not None:
        raise fail("--out is not supported (the published test.py refused it too): --show-dir DIR writes "
                   "every frame's prediction and GT as NNNN.npz")
    if args.format_only:
        raise fail("--format-only is not supported (the published test.py refused it too): --show-dir DIR "
                   "writes the predictions")
    eval_options = dict(one_of(args.eval_options, args.options, "--eval-options", "--options") or {})
    cfg = load_test_config(args)
    if args.eval:
        set_eval_metrics(cfg, args.eval, scope="mmdet", names=("metric",))
    if args.eval_fscore:
        eval_options["eval_fscore"] = True
    if args.show_dir:
        eval_options["show_dir"] = osp.abspath(args.show_dir)
    apply_run_flags(cfg, args, eval_options)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    return run_test(parse_args(argv), build_cfg)[1]


if __name__ == "__main__":
    main()
