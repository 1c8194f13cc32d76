"""``AV2Dataset``: the published ``{train,val,test}_annotations.json`` and the camera images
read unchanged (driving_hdmap.md §2.3, driving_hdmap_params.md §6.1), as an mmengine
``BaseDataset`` in mmdet's ``DATASETS``.

Frames in file order (segments, then time), every ``interval``-th one; each data info is
``annotations.frame_to_sample`` (token, cameras, ``ego2img = pad4(K) @ extrinsic``,
``map_geoms``) plus ``img_filename`` for bev_common's loader. The pipeline
(``online_hdmap.transforms``) turns it into the packed item.
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Mapping, Sequence
from typing import Any

from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset

from .annotations import frame_to_sample, iter_frames, load_annotations
from .chamfer_ap import CAT2ID
from .vectorize import ROI_SIZE


@DATASETS.register_module()
class AV2Dataset(BaseDataset):
    """Argoverse 2 online-map frames.

    Args (published names):
        ann_file: ``{split}_annotations.json`` (joined to ``data_root`` when relative).
        root_path: folder the frames' ``image_path`` are relative to (joined to
            ``data_root`` when relative; default: ``data_root``).
        cat2id: class name -> label; only the published ``{ped_crossing: 0, divider: 1,
            boundary: 2}`` is supported (the metric and the model are built for it).
        roi_size: map box (x, y) in metres, kept for the metric / formatting (published
            ``(60, 30)``).
        meta: the published modality dict (``use_lidar`` ... ), recorded in ``metainfo``.
        interval: keep every ``interval``-th frame of the flattened file.
        pipeline, test_mode, data_root, ...: mmengine ``BaseDataset``.
        work_dir, eval_config: published arguments of the old dataset-side evaluation;
            accepted and unused (the evaluation is ``VectorMapMetric``).
    """

    METAINFO = {"classes": tuple(CAT2ID)}

    def __init__(
        self,
        ann_file: str,
        root_path: str | None = None,
        pipeline: Sequence = (),
        cat2id: Mapping[str, int] | None = None,
        roi_size: Sequence[float] = ROI_SIZE,
        meta: Mapping[str, Any] | None = None,
        interval: int = 1,
        data_root: str | None = "",
        test_mode: bool = False,
        work_dir: str | None = None,
        eval_config: Mapping | None = None,
        **kwargs: Any,
    ) -> None:
        if cat2id is not None and dict(cat2id) != CAT2ID:
            raise ValueError(f"AV2Dataset: cat2id must be the published {CAT2ID}, got {dict(cat2id)}")
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"AV2Dataset: interval must be a positive int, got {interval!r}")
        if len(roi_size) != 2:
            raise ValueError(f"AV2Dataset: roi_size must be (x, y) metres, got {roi_size}")
        self.interval = interval
        self.roi_size = tuple(float(v) for v in roi_size)
        self.cat2id = dict(CAT2ID)
        self.modality = dict(meta or {})
        data_root = data_root or ""
        if root_path is None:
            root_path = data_root
        elif data_root and not osp.isabs(root_path):
            root_path = osp.join(data_root, root_path)
        self.root_path = root_path
        metainfo = dict(kwargs.pop("metainfo", None) or {})
        metainfo.setdefault("roi_size", self.roi_size)
        metainfo.setdefault("modality", self.modality)
        super().__init__(
            ann_file=ann_file,
            metainfo=metainfo,
            data_root=data_root,
            pipeline=list(pipeline),
            test_mode=test_mode,
            **kwargs,
        )

    def load_data_list(self) -> list[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f"AV2Dataset: ann_file {self.ann_file!r} does not exist")
        # VectorMapMetric reads the ground truth from here unless given its own ann_file.
        self._metainfo["ann_file"] = osp.abspath(self.ann_file)
        data_list = []
        for frame in iter_frames(load_annotations(self.ann_file), self.interval):
            sample = frame_to_sample(frame, self.root_path)
            if not self.test_mode and "map_geoms" not in sample:
                raise ValueError(
                    f"AV2Dataset: frame {sample['token']} of {self.ann_file} has no 'annotation'; a "
                    "training split needs map lines (set test_mode=True for the test split)"
                )
            sample["img_filename"] = sample["img_filenames"]
            sample["sample_idx"] = sample["token"]
            data_list.append(sample)
        return data_list
