"""Evaluate a ROAD_BEVFormer checkpoint on the config's test set: the OpenLane-V2 score (OLS,
DET_l, DET_t, TOP_ll, TOP_lt) and the 3D-lane F-score, printed and returned.

    python tools/test.py CONFIG CHECKPOINT [--eval *] [--eval-options K=V ...]
        [--fuse-conv-bn] [--gpu-collect] [--tmpdir DIR] [--seed N] [--deterministic]
        [--work-dir DIR] [--cfg-options K=V ...] [--launcher none|pytorch]

The published options: ``--eval-options dump=True dump_dir=DIR`` writes the submission
pickle ``DIR/result.pkl`` (checked by ``check_results``; on the unannotated test split that
is all that happens), ``--eval-options visualization=True visualization_dir=DIR`` writes the
pictures (any other ``OpenLaneV2Metric`` argument is accepted the same way). ``--eval`` takes
any value, as published (the dataset scores everything whatever it is given); mmengine's test
loop always evaluates. ``--out`` / ``--format-only`` are refused in favour of ``dump``. One
process (CPU or one GPU) works; ``--launcher pytorch`` (``dist_test.sh``) runs one process
per GPU, or over gloo without CUDA. The checkpoint is read by the repository's safe reader
(weights only; ``--trust-checkpoint`` for a full unpickle)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import autonomous_driving.openlane_v2.registration  # noqa: F401 - registrations, safe checkpoint loader
from classification.models.checkpoint import parse_args_with_trust
from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    add_custom_hook,
    apply_eval_options,
    apply_randomness,
    check_checkpoint,
    default_work_dir,
    fail,
    load_config,
    one_of,
    set_local_rank,
)
from dense_common.cpu_training import adapt_to_cpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a ROAD_BEVFormer checkpoint (OpenLane-V2 score).")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--eval", nargs="*", metavar="METRIC",
                        help="published: any value; the OpenLane-V2 score and the F-score are computed")
    parser.add_argument("--eval-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="OpenLaneV2Metric arguments: dump=True dump_dir=DIR, visualization=True "
                             "visualization_dir=DIR, ...")
    parser.add_argument("--options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="published alias of --eval-options")
    parser.add_argument("--out", help="refused: --eval-options dump=True dump_dir=DIR writes the predictions")
    parser.add_argument("--format-only", action="store_true",
                        help="refused: --eval-options dump=True dump_dir=DIR writes the submission")
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
    for flag, given in (("--out", args.out is not None), ("--format-only", args.format_only)):
        if given:
            raise fail(f"{flag} is not supported: --eval-options dump=True dump_dir=DIR writes the "
                       "submission pickle DIR/result.pkl (the published way for OpenLane-V2)")
    eval_options = dict(one_of(args.eval_options, args.options, "--eval-options", "--options") or {})
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = check_checkpoint(args.checkpoint)
    cfg.resume = False
    if args.gpu_collect:
        eval_options["collect_device"] = "gpu"
    if args.tmpdir:
        eval_options["collect_dir"] = args.tmpdir
    if eval_options:
        apply_eval_options(cfg, eval_options, scope="mmdet", renames={})
    if args.fuse_conv_bn:
        add_custom_hook(cfg, dict(type="FuseConvBNHook"))
    apply_randomness(cfg, seed=args.seed, diff_seed=False, deterministic=args.deterministic)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # gloo where there is no GPU
        print(note, flush=True)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    return runner.test()


if __name__ == "__main__":
    main()
