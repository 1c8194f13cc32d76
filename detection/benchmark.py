"""CPU inference time of Mask R-CNN InternImage-T FPN against mmdet's Mask R-CNN R50-FPN
on one 800x1333 photo, timed in the same run (random weights: the cost does not depend
on them, and nothing is downloaded).

    python detection/benchmark.py [--repeats 3] [--threads N]"""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse
import os.path as osp
import statistics
import time
import warnings

import numpy as np
import torch
from mmdet.apis import init_detector
from mmdet.utils import register_all_modules
from mmengine.dataset import Compose, pseudo_collate
from mmengine.hub import get_config

from ops_dcnv3.bench_report import Target, machine_summary, report

HERE = osp.dirname(osp.abspath(__file__))
# The two detectors have about the same FLOPs (published: 270 G vs 260 G at 1280x800), so
# InternImage-T may take at most this multiple of R50-FPN's time.
TARGET_RATIO = 1.5
MODELS = {
    "Mask R-CNN InternImage-T": osp.join(HERE, "configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"),
    "Mask R-CNN R50-FPN (mmdet)": "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
}


def photo(height: int = 800, width: int = 1333) -> np.ndarray:
    """scikit-image's astronaut photo resized to height x width (BGR, as mmcv loads images)."""
    from skimage import data, transform

    rgb = transform.resize(data.astronaut(), (height, width), preserve_range=True).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def time_model(config: str, image: np.ndarray, repeats: int) -> float:
    """Median milliseconds of ``test_step`` (preprocessing, network and post-processing)."""
    cfg = get_config(config) if config.startswith("mmdet::") else config
    with warnings.catch_warnings():  # "checkpoint is None, use COCO classes": random weights on purpose
        warnings.filterwarnings("ignore", message="checkpoint is None")
        model = init_detector(cfg, checkpoint=None, device="cpu")
    pipeline = model.cfg.test_dataloader.dataset.pipeline
    pipeline[0].type = "mmdet.LoadImageFromNDArray"
    data = pseudo_collate([Compose(pipeline)(dict(img=image, img_id=0))])
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first run warms up allocators and oneDNN
            start = time.perf_counter()
            model.test_step(data)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules()
    print(machine_summary(), flush=True)
    image = photo()
    results = {name: time_model(config, image, args.repeats) for name, config in MODELS.items()}
    print(f"one 800x1333 image, CPU, {torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, ms in results.items():
        print(f"  {name:28s} {ms:9.1f} ms")
    (ours, ms_ours), (anchor, ms_anchor) = results.items()
    print(f"  ratio {ours} / {anchor}: {ms_ours / ms_anchor:.2f}x")
    return results


def targets(results: dict[str, float]) -> list[Target]:
    ours, anchor = results.values()
    return [Target("Mask R-CNN InternImage-T / R50-FPN time", ours / anchor, "<=", TARGET_RATIO, "x")]


if __name__ == "__main__":
    raise SystemExit(0 if report(targets(main())) else 1)
