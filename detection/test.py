"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python detection/test.py CONFIG CHECKPOINT [--out results.pkl] [--show-dir DIR] [--tta]
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]"""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common.cli import check_checkpoint, default_work_dir, fail, load_config, set_local_rank


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test an InternImage detector (mmdet 3).")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    parser.add_argument("--show-dir", help="write ground truth and predictions drawn on each test image "
                                           "as SHOW_DIR/<image file name> (as segmentation/test.py)")
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


def build_cfg(args: argparse.Namespace) -> Config:
    if args.out is not None and not args.out.endswith((".pkl", ".pickle")):
        raise fail(f"--out must name a .pkl file, got {args.out!r}")
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = check_checkpoint(args.checkpoint)
    if args.show_dir:
        if "visualization" not in cfg.get("default_hooks", {}):
            raise fail("--show-dir needs default_hooks.visualization (DetVisualizationHook) in the config")
        # absolute: mmdet joins a relative one under WORK_DIR/<timestamp>/ (again on every batch)
        options = argparse.Namespace(show=False, show_dir=osp.abspath(args.show_dir), wait_time=0)
        cfg = trigger_visualization_hook(cfg, options)
    if args.tta:
        _use_tta(cfg)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = build_cfg(args)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    return runner.test()


if __name__ == "__main__":
    main()
