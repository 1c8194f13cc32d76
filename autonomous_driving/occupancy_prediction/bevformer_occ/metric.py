"""The Occ3D-nuScenes metrics of the occupancy challenge (driving_occupancy.md §1.3), as an
mmengine ``BaseMetric`` registered in mmdet's ``METRICS`` as ``OccMetric``.

- mIoU (published ``Metric_mIoU``): only voxels inside the camera mask count; an 18x18
  confusion matrix (``bincount(18*gt + pred)``) is summed over the dataset; IoU per class =
  diag / (row + col - diag); mIoU = nanmean over classes 0..16 (``free`` excluded; a class
  absent from both GT and predictions everywhere is nan and drops out).
- F-score (published ``Metric_FScore``, ``eval_fscore=True``): occupied voxels (labels not in
  ``void``) become their centre points; accuracy / completeness are the fractions of predicted
  / GT points whose nearest point of the other set lies closer than the thresholds (KD-trees);
  per frame their harmonic mean, averaged over frames.
- ``show_dir``: one ``NNNN.npz`` per frame (dataset order) with ``pred`` (uint8 X, Y, Z),
  ``gt`` and ``sample_token``, as the published ``--show-dir``.

Both are printed as the challenge prints them and, unlike the published code, returned.
"""

from __future__ import annotations

import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from scipy.spatial import cKDTree

OCC_CLASS_NAMES = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
)
# any published --eval value (dist_test.sh appends `--eval bbox`) means "evaluate the occupancy"
EVAL_NAMES = ("bbox", "mIoU", "miou")
EPS = 1e-8  # published harmonic-mean guard


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = GT, columns = prediction; labels
    outside [0, num_classes) in the GT are skipped (published ``hist_info``)."""
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"pred and gt must have as many voxels, got {pred.size} and {gt.size}")
    keep = (gt >= 0) & (gt < num_classes)
    if pred[keep].size and (pred[keep].min() < 0 or pred[keep].max() >= num_classes):
        raise ValueError(f"predicted labels must lie in [0, {num_classes}), got "
                         f"[{pred[keep].min()}, {pred[keep].max()}]")
    counts = np.bincount(num_classes * gt[keep] + pred[keep], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(hist: np.ndarray) -> np.ndarray:
    """diag / (row + col - diag); nan for a class with no GT and no prediction."""
    hist = np.asarray(hist, dtype=np.float64)
    diag = np.diag(hist)
    with np.errstate(divide="ignore", invalid="ignore"):
        return diag / (hist.sum(1) + hist.sum(0) - diag)


def voxel_points(labels: np.ndarray, voxel_size: Sequence[float], pc_range: Sequence[float],
                 void: Sequence[int]) -> np.ndarray:
    """Centres (n, 3) of the voxels whose label is not in ``void``, in metres."""
    occupied = ~np.isin(labels, np.asarray(void))
    index = np.stack(np.nonzero(occupied), axis=1).astype(np.float64)
    size = np.asarray(voxel_size, dtype=np.float64)
    return index * size + size / 2 + np.asarray(pc_range[:3], dtype=np.float64)


def frame_fscore(pred: np.ndarray, gt: np.ndarray, *, voxel_size: Sequence[float],
                 pc_range: Sequence[float], void: Sequence[int], threshold_acc: float,
                 threshold_complete: float, leaf_size: int = 10) -> tuple[float, float, float]:
    """(accuracy, completeness, F-score) of one frame. Voids (and voxels outside the mask,
    which the caller has set to a void label) are empty space. No predicted point scores 0
    (published); so does no GT point (where the published code would fail)."""
    pred_points = voxel_points(pred, voxel_size, pc_range, void)
    gt_points = voxel_points(gt, voxel_size, pc_range, void)
    if len(pred_points) == 0 or len(gt_points) == 0:
        return 0.0, 0.0, 0.0
    to_pred, _ = cKDTree(pred_points, leafsize=leaf_size).query(gt_points)
    to_gt, _ = cKDTree(gt_points, leafsize=leaf_size).query(pred_points)
    completeness = float(np.mean(to_pred < threshold_complete))
    accuracy = float(np.mean(to_gt < threshold_acc))
    fscore = 2.0 / (1.0 / (accuracy + EPS) + 1.0 / (completeness + EPS))
    return accuracy, completeness, fscore


def _numpy(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise KeyError(f"OccMetric: the data sample has no {name!r} (the model's predict output and the "
                       "dataset's ground truth must both be in the data sample)")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _sample_token(sample: dict) -> str:
    for key in ("sample_token", "token", "sample_idx"):
        if isinstance(sample.get(key), str):
            return sample[key]
    metas = sample.get("img_metas")
    if metas:
        meta = metas[-1] if isinstance(metas, (list, tuple)) else metas
        if isinstance(meta.get("sample_idx"), str):
            return meta["sample_idx"]
    raise KeyError("OccMetric(show_dir=...): the data sample names no sample token "
                   "(expected img_metas[-1]['sample_idx'])")


def _save_npz_atomically(path: str, **arrays: Any) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".writing-", suffix=".npz", dir=osp.dirname(path))
    os.close(handle)
    try:
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise


@METRICS.register_module()
class OccMetric(BaseMetric):
    """Occ3D mIoU (and F-score) over the data samples' ``pred_occ`` / ``voxel_semantics``.

    Args:
        metric: what ``--eval`` asked for; every published name (``bbox``, ``mIoU``) means the
            occupancy mIoU, as in the published ``dataset.evaluate``.
        num_classes: labels 0..num_classes-1, the last one ``free`` (not in the mIoU).
        use_image_mask / use_lidar_mask: restrict both metrics to ``mask_camera`` /
            ``mask_lidar`` voxels (published: camera mask on, lidar mask off).
        eval_fscore: also compute the F-score (``--eval_fscore``).
        voxel_size, pc_range: geometry of the grid for the F-score (metres).
        void: labels that are empty space for the F-score (``free`` and 255, the masked-out mark).
        threshold_acc, threshold_complete, leaf_size: published F-score parameters.
        show_dir: write ``NNNN.npz`` (``pred``, ``gt``, ``sample_token``) per frame here.
        class_names: defaults to the 18 Occ3D names.
        collect_device, collect_dir, prefix: mmengine ``BaseMetric`` (``--gpu-collect``, ``--tmpdir``).
    """

    default_prefix = "occ"

    def __init__(self, metric: str | Sequence[str] = "mIoU", *, num_classes: int = 18,
                 use_image_mask: bool = True, use_lidar_mask: bool = False, eval_fscore: bool = False,
                 voxel_size: Sequence[float] = (0.4, 0.4, 0.4),
                 pc_range: Sequence[float] = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4),
                 void: Sequence[int] = (17, 255), threshold_acc: float = 0.4,
                 threshold_complete: float = 0.4, leaf_size: int = 10, show_dir: str | None = None,
                 class_names: Sequence[str] | None = None, collect_device: str = "cpu",
                 collect_dir: str | None = None, prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        names = [metric] if isinstance(metric, str) else list(metric)
        unknown = [m for m in names if m not in EVAL_NAMES]
        if unknown:
            raise ValueError(f"OccMetric: metric must be among {EVAL_NAMES} (all mean the occupancy mIoU), "
                             f"got {unknown}")
        if use_image_mask and use_lidar_mask:
            raise ValueError("OccMetric: use_image_mask and use_lidar_mask exclude each other (published)")
        if len(voxel_size) != 3 or len(pc_range) != 6:
            raise ValueError(f"OccMetric: voxel_size needs 3 values and pc_range 6, got {list(voxel_size)} "
                             f"and {list(pc_range)}")
        names_given = class_names if class_names is not None else OCC_CLASS_NAMES
        if len(names_given) != num_classes:
            raise ValueError(f"OccMetric: {len(names_given)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = tuple(names_given)
        self.use_image_mask, self.use_lidar_mask = use_image_mask, use_lidar_mask
        self.eval_fscore = eval_fscore
        self.fscore_args = dict(voxel_size=tuple(voxel_size), pc_range=tuple(pc_range), void=tuple(void),
                                threshold_acc=threshold_acc, threshold_complete=threshold_complete,
                                leaf_size=leaf_size)
        self.show_dir = osp.abspath(show_dir) if show_dir else None

    # ------------------------------------------------------------------ per batch
    def _mask(self, sample: dict, shape: tuple[int, ...]) -> np.ndarray | None:
        name = "mask_camera" if self.use_image_mask else "mask_lidar" if self.use_lidar_mask else None
        if name is None:
            return None
        mask = _numpy(sample.get(name), name).astype(bool)
        if mask.shape != shape:
            raise ValueError(f"OccMetric: {name} has shape {mask.shape}, voxel_semantics {shape}")
        return mask

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = _numpy(sample.get("pred_occ"), "pred_occ")
            gt = _numpy(sample.get("voxel_semantics"), "voxel_semantics")
            if pred.shape != gt.shape:
                raise ValueError(f"OccMetric: pred_occ has shape {pred.shape}, voxel_semantics {gt.shape}")
            mask = self._mask(sample, gt.shape)
            result: dict[str, Any] = {}
            if mask is None:
                result["hist"] = confusion_matrix(pred, gt, self.num_classes)
            else:
                result["hist"] = confusion_matrix(pred[mask], gt[mask], self.num_classes)
            if self.eval_fscore:
                pred_f, gt_f = pred.astype(np.int64), gt.astype(np.int64)
                if mask is not None:  # published: outside the mask both become 255 (void)
                    pred_f[~mask] = 255
                    gt_f[~mask] = 255
                result["fscore"] = frame_fscore(pred_f, gt_f, **self.fscore_args)
            if self.show_dir:
                token = _sample_token(sample)
                os.makedirs(self.show_dir, exist_ok=True)
                # named by token here; renamed to the dataset index once the order is known
                _save_npz_atomically(self._token_path(token), pred=pred.astype(np.uint8),
                                     gt=gt.astype(np.uint8), sample_token=token)
                result["token"] = token
                result["index"] = sample.get("index")  # dataset position (the dump's number)
            self.results.append(result)

    def _token_path(self, token: str) -> str:
        return osp.join(self.show_dir, f".token-{token}.npz")

    # ------------------------------------------------------------------ whole dataset
    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        count = len(results)
        hist = np.sum([r["hist"] for r in results], axis=0)
        iou = per_class_iou(hist)
        free = self.num_classes - 1
        miou = float(np.nanmean(iou[:free]) * 100) if not np.all(np.isnan(iou[:free])) else float("nan")
        lines = [f"===> per class IoU of {count} samples:"]
        lines += [f"===> {self.class_names[c]} - IoU = {round(iou[c] * 100, 2)}" for c in range(free)]
        lines.append(f"===> mIoU of {count} samples: {round(miou, 2)}")
        metrics = {"mIoU": miou}
        metrics.update({f"IoU_{self.class_names[c]}": float(iou[c] * 100) for c in range(free)})
        if self.eval_fscore:
            scores = np.asarray([r["fscore"] for r in results], dtype=np.float64)
            accuracy, completeness, fscore = scores.mean(0)
            lines.append(f"\n######## F score: {fscore} #######")
            metrics.update(F_score=float(fscore), accuracy=float(accuracy), completeness=float(completeness))
        if self.show_dir:
            self._name_dumps(results)
            lines.append(f"Saved {count} predictions and GTs as NNNN.npz in {self.show_dir}")
        print_log("\n".join(lines), logger="current")
        return metrics

    def _name_dumps(self, results: list[dict]) -> None:
        """The per-token files become ``NNNN.npz`` in dataset order: by the samples' dataset
        ``index`` when they carry one (a multi-process run gathers results out of order, see
        ``bev_common.samplers``), else the gathered order; a token listed twice gets a copy."""
        if all(result.get("index") is not None for result in results):
            results = sorted(results, key=lambda result: result["index"])
        written: dict[str, str] = {}
        for index, result in enumerate(results):
            token = result["token"]
            source = self._token_path(token)
            target = osp.join(self.show_dir, f"{index:04d}.npz")
            if token in written:
                shutil.copyfile(written[token], target)
            elif osp.exists(source):
                os.replace(source, target)
            else:
                raise FileNotFoundError(f"OccMetric: the dump of sample {token} ({source}) is missing")
            written[token] = target
