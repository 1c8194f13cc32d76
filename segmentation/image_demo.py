"""Segment an image, or every image in a folder, and write colour overlays.

    python segmentation/image_demo.py IMG_OR_DIR CONFIG CKPT [--palette ade20k|cityscapes|cocostuff]
        [--opacity 0.5] [--out DIR] [--device cpu]

Overlays are written as ``<out>/<image file name>``. Without ``--palette`` the class names
and colours stored in the checkpoint (or the config's dataset) are used."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os
import os.path as osp

from mmseg_custom.palettes import PALETTES, palette_meta

from classification.models.checkpoint import parse_args_with_trust
from classification.output_root import default_output
from dense_common.cli import check_checkpoint, fail, load_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Segmentation demo: overlays for an image or a folder")
    parser.add_argument("img", help="an image file or a folder of images")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--palette", choices=list(PALETTES), help="class names/colours to draw with")
    parser.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in (0, 1]")
    parser.add_argument("--out", default=None,
                        help="output folder (default: $INTERNIMAGE_OUTPUT/demo, outside the checkout)")
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda:0")
    args = parse_args_with_trust(parser, argv)  # adds --trust-checkpoint
    if not 0 < args.opacity <= 1:
        parser.error(f"--opacity must be in (0, 1], got {args.opacity}")
    return args


def list_images(path: str) -> list[str]:
    """``path`` itself if it is a file, else the images directly inside the folder (sorted)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise fail(f"image or folder {path!r} does not exist")
    images = sorted(osp.join(path, name) for name in os.listdir(path)
                    if name.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(osp.join(path, name)))
    if not images:
        raise fail(f"folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    args.out = args.out or default_output("demo")
    images = list_images(args.img)
    cfg = load_config(args.config)
    checkpoint = check_checkpoint(args.checkpoint)
    from mmseg.apis import inference_model, init_model, show_result_pyplot

    model = init_model(cfg, checkpoint, device=args.device)
    if args.palette:
        model.dataset_meta = palette_meta(args.palette)
    if osp.isfile(args.out):
        raise fail(f"--out names a folder (overlays go to OUT/<image name>); {args.out!r} is a file")
    os.makedirs(args.out, exist_ok=True)
    written = []
    for image in images:
        result = inference_model(model, image)
        out_file = osp.join(args.out, osp.basename(image))
        show_result_pyplot(model, image, result, opacity=args.opacity, show=False, draw_gt=False,
                           out_file=out_file)
        written.append(out_file)
        print(f"{image} -> {out_file}")
    return written


if __name__ == "__main__":
    main()
