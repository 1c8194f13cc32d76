"""Zero-shot instance segmentation: a box detector prompts Segment Anything, COCO box and
mask AP of the result.

    python sam/main_zero_shot_instance_seg.py DET_CFG DET_CKPT SAM_CKPT [--sam_type vit_h]
        [--eval segm bbox] [--out results.pkl] [--show-dir DIR] [--work-dir DIR]
        [--cfg-options K=V ...] [--launcher none|pytorch] [--trust-checkpoint]

DET_CFG is any detection config (detection/configs), DET_CKPT its weights, SAM_CKPT a
Segment Anything checkpoint of ``--sam_type`` (a published ``sam_vit_{b,l,h}_*.pth``). The
config's test dataloader and evaluator run through mmengine's test loop exactly as in
``detection/test.py`` (whose option handling this reuses: work dir, ``--eval``, ``--out``,
``--show-dir``, ``--launcher``), with the detector wrapped in ``SamPromptedDetector``
(sam/prompted_detector.py). Distributed: ``torchrun --nproc_per_node N
sam/main_zero_shot_instance_seg.py ... --launcher pytorch`` (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

from mmdet.evaluation import DumpDetResults
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from classification.models.checkpoint import parse_args_with_trust
from dense_common.cli import check_checkpoint, fail, load_config, set_local_rank
from dense_common.cpu_training import adapt_to_cpu
from sam import prompted_detector  # noqa: F401 - registers SamPromptedDetector
from sam.sam_model import SAM_BUILDERS, ZeroShotSetupError

REPO = Path(__file__).resolve().parents[1]

# the flags of detection/test.py this script shares; the rest of its options keep their defaults
SHARED_FLAGS = ("out", "eval", "show_dir", "work_dir", "cfg_options", "launcher")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Zero-shot instance segmentation: detector boxes prompt SAM")
    parser.add_argument("det_config", metavar="DET_CFG", help="detection config (detection/configs/...)")
    parser.add_argument("det_checkpoint", metavar="DET_CKPT", help="detector checkpoint file or URL")
    parser.add_argument("sam_checkpoint", metavar="SAM_CKPT", help="SAM checkpoint (sam_vit_*.pth)")
    parser.add_argument("--sam_type", "--sam-type", choices=sorted(SAM_BUILDERS), default="vit_h",
                        help="SAM image encoder of SAM_CKPT (default vit_h)")
    parser.add_argument("--eval", nargs="+", metavar="METRIC", default=["bbox", "segm"],
                        help="COCO metrics (default: bbox segm)")
    parser.add_argument("--out", help="also dump the predictions (boxes and masks) to this .pkl file")
    parser.add_argument("--show-dir", help="draw the predictions into WORK_DIR/<timestamp>/SHOW_DIR")
    parser.add_argument("--work-dir", help="where the logs go (default: as detection/test.py)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override entries of the detection config")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                        help="pytorch: one process per device under torchrun")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def detection_test_script() -> ModuleType:
    """detection/test.py as a module (by path: ``test`` is also the stdlib's package name)."""
    spec = importlib.util.spec_from_file_location("detection_test_script", REPO / "detection" / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_box_detector(path: str, cfg: Config) -> None:
    """DET_CFG must build an mmdet detector (boxes to prompt with): one line otherwise."""
    scope, model_type = cfg.get("default_scope"), cfg.get("model", {}).get("type")
    model_class = MODELS.get(model_type) if scope == "mmdet" and isinstance(model_type, str) else None
    if model_class is None or not issubclass(model_class, BaseDetector):
        raise fail(f"DET_CFG {path!r} is not a box detector config (default_scope {scope!r}, model "
                   f"{model_type!r}): its model predicts no boxes to prompt SAM "
                   "with; give a detection config (detection/configs)")


def build_cfg(args: argparse.Namespace) -> Config:
    """detection/test.py's config for DET_CFG/DET_CKPT and the shared flags, with the model
    wrapped in ``SamPromptedDetector`` (which loads both checkpoints)."""
    check_box_detector(args.det_config, load_config(args.det_config, args.cfg_options))
    sam_checkpoint = check_checkpoint(args.sam_checkpoint)
    detection_test = detection_test_script()
    test_args = detection_test.parse_args([args.det_config, args.det_checkpoint])  # its defaults
    for name in SHARED_FLAGS:
        if not hasattr(test_args, name):
            raise RuntimeError(f"detection/test.py no longer has the option {name!r} this script passes on")
        setattr(test_args, name, getattr(args, name))
    cfg = detection_test.build_cfg(test_args)
    cfg.model = dict(type="SamPromptedDetector", detector=cfg.model, detector_checkpoint=cfg.load_from,
                     sam_type=args.sam_type, sam_checkpoint=sam_checkpoint,
                     backend_args=cfg.get("backend_args"))
    cfg.load_from = None  # the wrapper loads the detector's weights into its detector
    for note in adapt_to_cpu(cfg, args.launcher):  # --launcher pytorch without CUDA: gloo
        print(note)
    return cfg


def _test_dataset_size(dataset_cfg: dict) -> int | None:
    """The number of samples of the test dataset, built unserialised (mmengine's serialising
    step fails on an empty one); None when the dataset cannot be built that way."""
    from mmdet.registry import DATASETS

    try:
        return len(DATASETS.build(dict(dataset_cfg, serialize_data=False)))
    except Exception:  # noqa: BLE001 - a wrapper dataset, or another problem: let the first error stand
        return None


def build_test_loop(runner: Runner, cfg: Config, det_config: str):
    """``runner.test_loop`` (built here: dataset, dataloader, evaluator); a test dataset
    without images is one line naming its annotation file."""
    dataset = cfg.test_dataloader.dataset
    empty = fail(f"the test dataset of {det_config} has no images (ann_file {dataset.get('ann_file')!r}, "
                 f"data_root {dataset.get('data_root')!r})")
    try:
        loop = runner.test_loop
    except ValueError:
        if _test_dataset_size(dataset) == 0:
            raise empty from None
        raise
    if len(loop.dataloader.dataset) == 0:
        raise empty
    return loop


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = build_cfg(args)
    try:
        runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
        build_test_loop(runner, cfg, args.det_config)
        if args.out:
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        return runner.test()
    except ZeroShotSetupError as error:
        raise fail(str(error)) from None


if __name__ == "__main__":
    main()
