"""Evaluate a segmentor checkpoint (mIoU etc. from the config's test_evaluator).

    python segmentation/test.py CONFIG CKPT [--work-dir DIR] [--out DIR] [--show-dir DIR]
        [--aug-test] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
        [--eval mIoU [mDice mFscore]] [--format-only] [--eval-options K=V ...] [--show]
        [--fuse-conv-bn] [--options K=V ...]

``--aug-test``: multi-scale (0.5, 0.75, 1.0, 1.25, 1.5, 1.75 x the test scale) + flip
through mmseg's SegTTAModel; ``*_ms`` configs turn it on themselves (``aug_test=True``)
and may set their own ``aug_test_ratios``. ``--out`` writes the predicted label maps
(PNG) there; ``--show-dir DIR`` writes overlays of ground truth and prediction as
``DIR/<image file name>`` (as detection/test.py does)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp

import mmcv
from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS
from mmseg_custom.tta import DEFAULT_RATIOS, build_tta_pipeline

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

# published dataset.evaluate()/format_results() keyword -> mmseg 1 evaluator argument
EVAL_OPTION_NAMES = {"imgfile_prefix": "output_dir"}
CITYSCAPES_DATASETS = ("CityscapesDataset", "MapillaryCityscapesDataset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a segmentor (InternImage, mmseg 1.x)")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="where the evaluation log goes")
    parser.add_argument("--out", help="directory for the predicted label maps (PNG)")
    parser.add_argument("--show-dir", help="directory for prediction/ground-truth overlays")
    parser.add_argument("--aug-test", action="store_true", help="multi-scale + flip test-time augmentation")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, e.g. test_dataloader.batch_size=1")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    published = parser.add_argument_group("published (mmseg 0.x) flags")
    published.add_argument("--eval", nargs="+", metavar="METRIC", help="metrics: mIoU, mDice, mFscore")
    published.add_argument("--format-only", action="store_true",
                           help="write the submission files without evaluating")
    published.add_argument("--eval-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                           help="evaluator arguments, e.g. imgfile_prefix=DIR")
    published.add_argument("--show", action="store_true", help="show each prediction in a window")
    published.add_argument("--fuse-conv-bn", action="store_true",
                           help="fold BatchNorms into the preceding convolutions (faster, same outputs)")
    published.add_argument("--options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                           help="published alias of --cfg-options")
    args = parse_args_with_trust(parser, argv)  # adds --trust-checkpoint
    set_local_rank(args.local_rank)
    return args


def enable_aug_test(cfg: Config) -> None:
    """Wraps the model in ``cfg.tta_model`` (SegTTAModel) and swaps the test pipeline for its
    multi-scale + flip form."""
    ratios = cfg.get("aug_test_ratios", DEFAULT_RATIOS)
    pipeline = build_tta_pipeline(cfg.test_dataloader.dataset.pipeline, ratios=ratios, flip=True)
    cfg.test_dataloader.dataset.pipeline = pipeline
    cfg.tta_pipeline = pipeline
    tta_model = dict(cfg.get("tta_model") or dict(type="SegTTAModel"))
    tta_model["module"] = cfg.model
    cfg.model = tta_model


@HOOKS.register_module(force=True)
class ShowDirSegVisualizationHook(SegVisualizationHook):
    """--show-dir: one overlay (ground truth beside prediction) per test image, written as
    ``<show_dir>/<image file name>``, the layout of detection/test.py --show-dir (mmseg's own
    hook writes ``<save_dir>/vis_data/vis_image/test_<name>_<step>.png``)."""

    def __init__(self, show_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.show_dir = show_dir

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict, outputs: list) -> None:
        for sample in outputs:
            name = osp.basename(sample.img_path)
            image = mmcv.imread(sample.img_path, channel_order="rgb")
            self._visualizer.add_datasample(f"test_{name}", image, data_sample=sample, show=False,
                                            out_file=osp.join(self.show_dir, name))


def enable_visualization(cfg: Config, show_dir: str | None, show: bool = False) -> None:
    hooks = cfg.default_hooks
    if "visualization" not in hooks:
        raise fail("--show/--show-dir need default_hooks.visualization (SegVisualizationHook) in the config")
    if show_dir:
        hooks.visualization.type = "ShowDirSegVisualizationHook"
        hooks.visualization.show_dir = show_dir
    hooks.visualization.draw = True
    hooks.visualization.interval = 1
    if show:  # published --show: a window per image
        hooks.visualization.show = True
        hooks.visualization.wait_time = 2


def _dataset_type(cfg: Config) -> str:
    dataset = cfg.test_dataloader.dataset
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    return str(dataset.get("type", ""))


def enable_format_only(cfg: Config, output_dir: str | None) -> str:
    """The evaluator writes submission files instead of scores; returns the folder."""
    output_dir = output_dir or osp.join(cfg.work_dir, "format_results")
    if _dataset_type(cfg) in CITYSCAPES_DATASETS:
        cfg.test_evaluator = dict(type="CityscapesSubmissionMetric", output_dir=output_dir)
    else:
        apply_eval_options(cfg, {"format_only": True, "output_dir": output_dir},
                           scope="mmseg", renames={})
    return output_dir


def build_cfg(args: argparse.Namespace) -> Config:
    if args.eval and args.format_only:
        raise fail("give --eval or --format-only, not both (--format-only writes files without evaluating)")
    eval_options = dict(args.eval_options or {})
    checkpoint = check_checkpoint(args.checkpoint)
    cfg = load_config(args.config, one_of(args.cfg_options, args.options, "--cfg-options", "--options"))
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.launcher = args.launcher
    cfg.load_from = checkpoint
    if args.aug_test or cfg.get("aug_test", False):
        enable_aug_test(cfg)
    if args.show_dir or args.show:
        enable_visualization(cfg, osp.abspath(args.show_dir) if args.show_dir else None, show=args.show)
    if args.format_only:
        prefix = eval_options.pop("imgfile_prefix", None)
        enable_format_only(cfg, prefix or args.out)
    elif args.out:
        cfg.test_evaluator["output_dir"] = args.out
        cfg.test_evaluator["keep_results"] = True
    if args.eval:
        set_eval_metrics(cfg, args.eval, scope="mmseg", names=("iou_metrics", "metric"))
    if eval_options:
        apply_eval_options(cfg, eval_options, scope="mmseg", renames=EVAL_OPTION_NAMES)
    if args.fuse_conv_bn:
        add_custom_hook(cfg, dict(type="FuseConvBNHook"))
    return cfg


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # dist_test.sh without CUDA: gloo
        print(note)
    metrics = Runner.from_cfg(cfg).test()
    print("results: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
