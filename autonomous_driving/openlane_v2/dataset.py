"""``OpenLaneV2SubsetADataset``: the collection pickle ``data_dict_<subset>_<split>.pkl``
(``collection.preprocess``) as an mmengine ``BaseDataset`` (driving_openlane_params.md §1.1).

One item per frame, in pickle (data-dict) order. ``get_data_info`` gives the published
pipeline input: the 7 image paths (front camera first), the per-camera geometry of
``geometry.frame_geometry`` (``lidar2img`` without an ego2lidar factor, ``lidar2cam``,
``cam_intrinsic``, ``cam2imgs``, ``rots``, ``trans``), the absolute ``can_bus`` and, where the
frame is annotated, the ground truth: ``gt_lc (n, P, 3)`` float32, ``gt_lc_labels`` zeros,
``gt_te (k, 4)`` xyxy float32, ``gt_te_labels`` = the attribute, ``gt_topology_lclc (n, n)``
and ``gt_topology_lcte (n, k)`` int8. The pipeline (``pipeline.PackOpenLaneInputs`` last)
turns it into the bev_common contract item ``{'inputs': {'img': (1, 7, 3, H, W)},
'data_samples'}`` with ``metainfo['img_metas'] = [meta]``: no temporal queue (the published
``prev_bev`` is always None).
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence
from typing import Any

import numpy as np
from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset

from .collection import load_collection
from .geometry import frame_geometry
from .submission import NUM_ATTRIBUTES

GT_KEYS = ("gt_lc", "gt_lc_labels", "gt_te", "gt_te_labels", "gt_topology_lclc", "gt_topology_lcte")


def frame_ground_truth(frame: dict[str, Any], where: str = "frame") -> dict[str, np.ndarray]:
    """The published GT arrays of one annotated collection frame (shapes checked)."""
    ann = frame["annotation"]
    lanes = [np.asarray(x["points"], dtype=np.float32) for x in ann["lane_centerline"]]
    tes = ann["traffic_element"]
    n, k = len(lanes), len(tes)
    if n and len({lane.shape for lane in lanes}) != 1:
        raise ValueError(
            f"{where}: the lanes have different point counts {sorted({len(x) for x in lanes})}; the "
            "collection subsamples every lane alike (point_interval), so the pickle is not ours"
        )
    gt_te = np.asarray([np.asarray(x["points"], dtype=np.float32).reshape(4) for x in tes],
                       dtype=np.float32).reshape(k, 4)
    attributes = np.asarray([int(x["attribute"]) for x in tes], dtype=np.int64)
    if attributes.size and (attributes.min() < 0 or attributes.max() >= NUM_ATTRIBUTES):
        raise ValueError(
            f"{where}: traffic-element attributes must lie in 0..12, got {sorted(set(attributes.tolist()))}"
        )
    lclc = np.asarray(ann["topology_lclc"], dtype=np.int8).reshape(n, n)
    lcte = np.asarray(ann["topology_lcte"], dtype=np.int8).reshape(n, k)
    return {
        "gt_lc": np.stack(lanes) if n else np.zeros((0, 0, 3), dtype=np.float32),
        "gt_lc_labels": np.zeros(n, dtype=np.int64),
        "gt_te": gt_te,
        "gt_te_labels": attributes,
        "gt_topology_lclc": lclc,
        "gt_topology_lcte": lcte,
    }


@DATASETS.register_module()
class OpenLaneV2SubsetADataset(BaseDataset):
    """OpenLane-V2 subset A from its collection pickle.

    Args (published names): ``data_root`` (where ``image_path`` is relative to), ``meta_root``
        and ``collection`` (``ann_file = {meta_root}/{collection}.pkl``, meta_root taken from the
        working directory as published, default data_root; or give ``ann_file``),
        ``pipeline``, ``test_mode``; ``queue_length`` must be 1 (the published model is
        single-frame).
    """

    METAINFO = {"classes": ("centerline",)}

    def __init__(
        self,
        data_root: str = "",
        meta_root: str | None = None,
        collection: str | None = None,
        ann_file: str = "",
        pipeline: Sequence = (),
        test_mode: bool = False,
        queue_length: int = 1,
        **kwargs: Any,
    ):
        if queue_length != 1:
            raise ValueError(
                f"OpenLaneV2SubsetADataset: queue_length must be 1 (ROAD_BEVFormer uses no temporal "
                f"queue), got {queue_length}"
            )
        if collection is not None:
            if ann_file:
                raise ValueError(
                    "OpenLaneV2SubsetADataset: give ann_file or meta_root + collection, not both"
                )
            # published: meta_root is a path of its own (from the working directory, data_root
            # in front of it), not one under data_root
            ann_file = (osp.abspath(osp.join(meta_root, f"{collection}.pkl")) if meta_root is not None
                        else f"{collection}.pkl")
        if not ann_file:
            raise ValueError(
                "OpenLaneV2SubsetADataset: no annotation file: give meta_root + collection (e.g. "
                "collection='data_dict_subset_A_train') or ann_file"
            )
        self.meta_root, self.collection = meta_root, collection
        # an ann_file given with data_root already in front of it: do not join it twice
        if data_root and not osp.isabs(ann_file) and osp.exists(ann_file) and \
                not osp.exists(osp.join(data_root, ann_file)):
            ann_file = osp.abspath(ann_file)
        super().__init__(
            ann_file=ann_file, data_root=data_root, pipeline=list(pipeline), test_mode=test_mode, **kwargs
        )

    def load_data_list(self) -> list[dict]:
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(
                f"OpenLaneV2SubsetADataset: collection {self.ann_file} not found (data_root="
                f"{self.data_root!r}); write it with `python -m autonomous_driving.openlane_v2.collection "
                "--root data/OpenLane-V2`"
            )
        frames = load_collection(self.ann_file)
        data_list = []
        for token, frame in frames.items():
            where = f"{self.ann_file} {token}"
            if not self.test_mode and "annotation" not in frame:
                raise ValueError(f"{where}: training needs annotated frames (the test split has none)")
            data_list.append({"token": tuple(token), "frame": frame})
        return data_list

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        split, segment_id, timestamp = info["token"]
        frame = info["frame"]
        geometry = frame_geometry(frame)  # checks the front camera comes first
        results = {
            "token": (split, segment_id, timestamp),
            "split": split,
            "scene_token": segment_id,
            "sample_idx": timestamp,
            "timestamp": timestamp,
            "img_filename": [
                osp.join(self.data_root, frame["sensor"][cam]["image_path"]) for cam in geometry["cameras"]
            ],
            "cameras": geometry["cameras"],
            "can_bus": geometry["can_bus"],
            "index": idx,
        }
        for key in ("lidar2img", "lidar2cam", "cam_intrinsic", "cam2imgs", "rots", "trans"):
            results[key] = geometry[key]
        results["img_paths"] = results["img_filename"]
        if "annotation" in frame:
            results.update(frame_ground_truth(frame, f"{self.ann_file} {info['token']}"))
        return results

    def prepare_data(self, idx: int) -> dict:
        item = super().prepare_data(idx)
        if not isinstance(item, dict) or not {"inputs", "data_samples"} <= set(item):
            raise ValueError(
                "OpenLaneV2SubsetADataset: the pipeline must end with PackOpenLaneInputs (it returned "
                f"{sorted(item) if isinstance(item, dict) else type(item).__name__})"
            )
        return item
