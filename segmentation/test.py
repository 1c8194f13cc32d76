"""Evaluate a segmentor checkpoint (mIoU etc. from the config's test_evaluator).

    python segmentation/test.py CONFIG CKPT [--work-dir DIR] [--out DIR] [--show-dir DIR]
        [--aug-test] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

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
from dense_common.cli import check_checkpoint, default_work_dir, fail, load_config, set_local_rank


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


def enable_visualization(cfg: Config, show_dir: str) -> None:
    hooks = cfg.default_hooks
    if "visualization" not in hooks:
        raise fail("--show-dir needs default_hooks.visualization (SegVisualizationHook) in the config")
    hooks.visualization.type = "ShowDirSegVisualizationHook"
    hooks.visualization.show_dir = show_dir
    hooks.visualization.draw = True
    hooks.visualization.interval = 1


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    checkpoint = check_checkpoint(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.launcher = args.launcher
    cfg.load_from = checkpoint
    if args.aug_test or cfg.get("aug_test", False):
        enable_aug_test(cfg)
    if args.show_dir:
        enable_visualization(cfg, osp.abspath(args.show_dir))
    if args.out:
        cfg.test_evaluator["output_dir"] = args.out
        cfg.test_evaluator["keep_results"] = True
    metrics = Runner.from_cfg(cfg).test()
    print("results: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
