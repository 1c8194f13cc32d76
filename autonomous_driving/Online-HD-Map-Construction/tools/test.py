"""Test a VectorMapNet checkpoint (published command lines):

    python tools/test.py CONFIG CHECKPOINT --split val --eval
    python tools/test.py CONFIG CHECKPOINT --split test --format-only
        [--work-dir DIR] [--fuse-conv-bn] [--gpu-collect] [--tmpdir DIR] [--seed N]
        [--deterministic] [--cfg-options K=V ...] [--launcher none|pytorch|slurm|mpi]

``--split val --eval`` writes ``<work_dir>/submission_vector.json`` and evaluates it (Chamfer
AP at 0.5 / 1.0 / 1.5 m per class and mAP, the published table, returned for logging);
``--split test --format-only`` only writes the submission, for the challenge server or
``tools/evaluate_submission.py``. ``--eval`` on the test split (no ground truth) is an error,
as published. ``--seed N`` also seeds the polyline sampler (top-p sampling is stochastic), so
a rerun gives the same lines. A single process on CPU or one GPU works; ``--launcher pytorch``
(``dist_test.sh``) runs one process per GPU, or over gloo without CUDA. The checkpoint is read
by the repository's safe reader (weights only; ``--trust-checkpoint`` for a full unpickle)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

from mmengine.config import Config, DictAction

import autonomous_driving.online_hdmap.registration  # noqa: F401 - registrations, safe checkpoint loader
from autonomous_driving.test_cli import apply_run_flags, load_test_config, run_test
from classification.models.checkpoint import parse_args_with_trust
from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    fail,
)

EVAL_NAMES = ("chamfer",)  # the challenge metric (the published evaluator's default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a VectorMapNet checkpoint (Chamfer AP / submission).")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--split", choices=["val", "test"], default="val",
                        help="val: the config's val_dataloader; test: its test_dataloader (no ground truth)")
    parser.add_argument("--eval", nargs="*", metavar="METRIC",
                        help="Chamfer AP (published: a bare --eval; 'chamfer' is the only metric)")
    parser.add_argument("--format-only", action="store_true",
                        help="only write <work_dir>/submission_vector.json")
    parser.add_argument("--work-dir", help="where the logs and submission_vector.json go")
    parser.add_argument("--fuse-conv-bn", action="store_true",
                        help="fold BatchNorms into the preceding convolutions (faster, same outputs)")
    parser.add_argument("--gpu-collect", action="store_true", help="gather the results over GPUs (nccl)")
    parser.add_argument("--tmpdir", help="where ranks leave their results for rank 0 (CPU collection)")
    parser.add_argument("--seed", type=int, help="random seed (also of the polyline sampler)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def build_cfg(args: argparse.Namespace) -> Config:
    evaluate = args.eval is not None
    if evaluate and args.format_only:
        raise fail("give --eval or --format-only, not both (--eval writes the submission too)")
    if not evaluate and not args.format_only:
        raise fail("nothing to do: give --eval (--split val) or --format-only (writes the submission)")
    if evaluate and args.split == "test":
        raise fail("--eval needs ground truth, which the test split has not: use --split val --eval, or "
                   "--split test --format-only")
    unknown = [m for m in args.eval or [] if m not in EVAL_NAMES]
    if unknown:
        raise fail(f"--eval {' '.join(unknown)}: the only metric is {EVAL_NAMES[0]!r} (Chamfer AP)")
    cfg = load_test_config(args)
    if args.split == "val":
        for key in ("val_dataloader", "val_evaluator"):
            if not cfg.get(key):
                raise fail(f"--split val: the config has no {key}")
        cfg.test_dataloader = cfg.val_dataloader
        cfg.test_evaluator = cfg.val_evaluator
    if not cfg.get("test_dataloader") or not cfg.get("test_evaluator"):
        raise fail(f"--split {args.split}: the config has no test_dataloader / test_evaluator")
    if isinstance(cfg.test_evaluator, (list, tuple)):
        raise fail("the test evaluator must be one VectorMapMetric")
    evaluator = dict(cfg.test_evaluator)
    if evaluator.get("type") != "VectorMapMetric":
        raise fail(f"the test evaluator must be VectorMapMetric, the config has {evaluator.get('type')!r}")
    evaluator.update(format_only=args.format_only, out_dir=osp.abspath(cfg.work_dir))
    cfg.test_evaluator = evaluator
    apply_run_flags(cfg, args, {})
    if args.seed is not None:
        cfg.model.sampling_seed = args.seed  # reproducible top-p samples
    return cfg


def main(argv: list[str] | None = None) -> dict:
    cfg, metrics = run_test(parse_args(argv), build_cfg)
    print(f"submission: {osp.join(osp.abspath(cfg.work_dir), 'submission_vector.json')}")
    return metrics


if __name__ == "__main__":
    main()
