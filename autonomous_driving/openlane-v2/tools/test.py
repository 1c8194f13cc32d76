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

import autonomous_driving.openlane_v2.registration  # noqa: F401 - registrations, safe checkpoint loader
from autonomous_driving.test_cli import apply_run_flags, load_test_config, run_test
from classification.models.checkpoint import parse_args_with_trust
from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    fail,
    one_of,
)


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
    cfg = load_test_config(args)
    apply_run_flags(cfg, args, eval_options)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    return run_test(parse_args(argv), build_cfg)[1]


if __name__ == "__main__":
    main()
