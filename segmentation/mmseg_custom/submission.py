"""``CityscapesSubmissionMetric``: ``test.py --format-only`` on Cityscapes writes the
evaluation server's files, as the published ``--format-only`` did: one PNG per image
(``<image name>.png``) holding Cityscapes label ids (the 19 train ids mapped back), and
evaluates nothing. mmseg 1.2's own CityscapesMetric needs the cityscapesscripts package,
which this stack does not install; the id table is Cityscapes' own."""

from __future__ import annotations

import os
import os.path as osp

import numpy as np
from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS
from PIL import Image

# train id -> label id (cityscapesscripts.helpers.labels); anything else -> 0 (unlabeled)
TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Label-id map of a train-id map; ids outside 0..18 (e.g. the unsupervised outputs of a
    150-class head) become 0, Cityscapes' ``unlabeled``."""
    table = np.zeros(256, dtype=np.uint8)
    table[:len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    return table[np.clip(train_ids, 0, 255).astype(np.int64)]


@METRICS.register_module()
class CityscapesSubmissionMetric(BaseMetric):
    def __init__(self, output_dir: str, **kwargs):
        super().__init__(**kwargs)
        if not output_dir:
            raise ValueError("CityscapesSubmissionMetric needs output_dir")
        self.output_dir = output_dir

    def process(self, data_batch, data_samples) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy()
            name = osp.splitext(osp.basename(sample["img_path"]))[0]
            path = osp.join(self.output_dir, f"{name}.png")
            Image.fromarray(to_label_ids(pred)).save(path)
            self.results.append(path)

    def compute_metrics(self, results: list) -> dict:
        return {"files_written": float(len(results))}
