"""Detect objects in one image and save it with the predictions drawn.

    python detection/image_demo.py IMG CONFIG CHECKPOINT [--out DIR] [--device cpu]
        [--palette coco|voc|citys|random] [--score-thr 0.3]

As in the published script, ``--out`` is a folder: the drawing goes to ``OUT/<image file
name>`` (default folder ``$INTERNIMAGE_OUTPUT/demo``, outside the checkout). ``--palette``
picks the box/mask colours (default: the dataset's)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os
import os.path as osp

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS

from classification.models.checkpoint import parse_args_with_trust
from classification.output_root import default_output
from dense_common.cli import check_checkpoint, fail, load_config

PALETTES = ("coco", "voc", "citys", "random")  # mmdet's named palettes (mmdet.visualization.get_palette)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="InternImage detection demo on one image.")
    parser.add_argument("img", help="image file")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--out", help="folder for the annotated image, written as OUT/<image file name> "
                                      "(default: $INTERNIMAGE_OUTPUT/demo, outside the checkout)")
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda:0")
    parser.add_argument("--palette", choices=PALETTES, default=None,
                        help="colours of the drawn classes (default: the dataset's palette)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="draw predictions scoring at least this")
    return parse_args_with_trust(parser, argv)  # adds --trust-checkpoint


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if not osp.isfile(args.img):
        raise fail(f"image {args.img!r} does not exist")
    if not 0.0 <= args.score_thr <= 1.0:
        raise fail(f"--score-thr must lie in [0, 1], got {args.score_thr}")
    cfg = load_config(args.config)
    model = init_detector(cfg, check_checkpoint(args.checkpoint), device=args.device)
    result = inference_detector(model, args.img)

    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = dict(model.dataset_meta)
    if args.palette:
        visualizer.dataset_meta["palette"] = args.palette
    out_dir = args.out or default_output("demo")
    if osp.isfile(out_dir):
        raise fail(f"--out names a folder (the image goes to OUT/<image name>); {out_dir!r} is a file")
    os.makedirs(out_dir, exist_ok=True)
    out = osp.join(out_dir, osp.basename(args.img))
    image = mmcv.imread(args.img, channel_order="rgb")
    visualizer.add_datasample("result", image, data_sample=result, draw_gt=False, show=False,
                              out_file=out, pred_score_thr=args.score_thr)
    kept = int((result.pred_instances.scores >= args.score_thr).sum())
    print(f"{kept} detections with score >= {args.score_thr}; wrote {out}")
    return out


if __name__ == "__main__":
    main()
