"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python detection/test.py CONFIG CHECKPOINT [--out results.pkl] [--eval bbox segm]
        [--format-only] [--eval-options K=V ...] [--show] [--show-dir DIR] [--show-score-thr 0.3]
        [--fuse-conv-bn] [--tta] [--work-dir DIR] [--cfg-options K=V ...] [--launcher ...]

The published (mmdet 2) flags map onto mmengine: ``--eval`` picks the evaluator's metrics
(CocoMetric ``metric``), ``--format-only`` writes the COCO result json files without
evaluating (``<prefix>.bbox.json`` / ``.segm.json``; prefix from ``--eval-options
jsonfile_prefix=...``, default ``WORK_DIR/results``), ``--eval-options`` (alias
``--options``) sets evaluator arguments, ``--show`` / ``--show-dir`` / ``--show-score-thr``
drive DetVisualizationHook, ``--fuse-conv-bn`` folds BatchNorms into convolutions."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

import mmdet_custom  # noqa: F401 - registrations and checkpoint conversion for any config
from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    add_custom_hook,
    apply_eval_options,
    check_checkpoint,
    default_work_dir,
    fail,
    load_config,
    one_of,
    set_eval_metrics,
    set_local_rank,
)
from dense_common.cpu_training import adapt_to_cpu

# published dataset.evaluate() keyword -> mmdet 3 evaluator argument
EVAL_OPTION_NAMES = {"jsonfile_prefix": "outfile_prefix"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test an InternImage detector (mmdet 3).")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    parser.add_argument("--eval", nargs="+", metavar="METRIC",
                        help="metrics to compute, e.g. bbox segm (COCO), mAP (VOC)")
    parser.add_argument("--format-only", action="store_true",
                        help="write the result files (COCO json) without evaluating, e.g. for a test server")
    parser.add_argument("--eval-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="evaluator arguments, e.g. classwise=True jsonfile_prefix=work_dirs/res")
    parser.add_argument("--options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="published alias of --eval-options")
    parser.add_argument("--show", action="store_true", help="show each image with its predictions")
    parser.add_argument("--show-dir", help="draw the predictions into WORK_DIR/<timestamp>/SHOW_DIR")
    parser.add_argument("--show-score-thr", type=float, default=None,
                        help="score threshold of the drawn predictions (default 0.3)")
    parser.add_argument("--fuse-conv-bn", action="store_true",
                        help="fold BatchNorms into the preceding convolutions (faster, same outputs)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation (the config's tta_model and tta_pipeline)")
    parser.add_argument("--work-dir", help="where the evaluation logs go (default ./work_dirs/<config>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config entries")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def _use_tta(cfg: Config) -> None:
    missing = [key for key in ("tta_model", "tta_pipeline") if key not in cfg]
    if missing:
        raise fail(f"--tta needs {' and '.join(missing)} in the config")
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while "dataset" in dataset:  # wrappers (ClassBalancedDataset, ...) hold the real one
        dataset = dataset["dataset"]
    dataset.pipeline = cfg.tta_pipeline


def _visualize(cfg: Config, args: argparse.Namespace) -> Config:
    if "visualization" not in cfg.get("default_hooks", {}):
        raise fail("--show/--show-dir need default_hooks.visualization (DetVisualizationHook) in the config")
    # absolute: mmdet joins a relative one under WORK_DIR/<timestamp>/ (again on every batch)
    show_dir = osp.abspath(args.show_dir) if args.show_dir else None
    options = argparse.Namespace(show=args.show, show_dir=show_dir, wait_time=2 if args.show else 0)
    cfg = trigger_visualization_hook(cfg, options)
    if args.show_score_thr is not None:
        cfg.default_hooks.visualization.score_thr = args.show_score_thr
    return cfg


def build_cfg(args: argparse.Namespace) -> Config:
    if args.out is not None and not args.out.endswith((".pkl", ".pickle")):
        raise fail(f"--out must name a .pkl file, got {args.out!r}")
    if args.eval and args.format_only:
        raise fail("give --eval or --format-only, not both (--format-only writes results without evaluating)")
    if args.show_score_thr is not None and not 0.0 <= args.show_score_thr <= 1.0:
        raise fail(f"--show-score-thr must lie in [0, 1], got {args.show_score_thr}")
    if args.show_score_thr is not None and not (args.show or args.show_dir):
        raise fail("--show-score-thr applies to drawn predictions: add --show or --show-dir")
    eval_options = one_of(args.eval_options, args.options, "--eval-options", "--options") or {}
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = check_checkpoint(args.checkpoint)
    if args.eval:
        set_eval_metrics(cfg, args.eval, scope="mmdet", names=("metric",))
    if eval_options:
        apply_eval_options(cfg, dict(eval_options), scope="mmdet", renames=EVAL_OPTION_NAMES)
    if args.format_only:
        apply_eval_options(cfg, {"format_only": True}, scope="mmdet", renames={})
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        for evaluator in evaluators:
            if not evaluator.get("outfile_prefix"):
                evaluator["outfile_prefix"] = osp.join(cfg.work_dir, "results")
    if args.show or args.show_dir:
        cfg = _visualize(cfg, args)
    if args.fuse_conv_bn:
        add_custom_hook(cfg, dict(type="FuseConvBNHook"))
    if args.tta:
        _use_tta(cfg)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # dist_test.sh without CUDA: gloo
        print(note)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    if args.format_only:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        prefixes = {e.get("outfile_prefix") for e in evaluators}
        print(f"result files written with prefix {', '.join(sorted(p for p in prefixes if p))}")
    return metrics


if __name__ == "__main__":
    main()
