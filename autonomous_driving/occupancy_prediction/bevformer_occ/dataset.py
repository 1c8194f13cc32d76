"""``NuSceneOcc``: the published Occ3D-nuScenes info pkl (``occ_infos_temporal_*.pkl``) and
``gts/<scene>/<token>/labels.npz`` layout, read unchanged, as an mmengine ``BaseDataset``.

An item is ``{'inputs': {'img': (Q, N, 3, H, W)}, 'data_samples': BaseDataElement}`` with
``metainfo['img_metas']`` = Q per-frame metas (oldest first) and the current frame's
``voxel_semantics`` / ``mask_lidar`` / ``mask_camera`` as data fields. Training: Q =
``queue_length`` (published: 3 random frames out of the 4 before, plus the current one) with
CAN-bus deltas made relative by ``union2one``; test: Q = 1 with the absolute CAN bus (the
detector takes the delta against its ``prev_frame_info``).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence

import numpy as np
import torch
from mmdet.registry import DATASETS
from mmengine import fileio
from mmengine.dataset import BaseDataset
from mmengine.structures import BaseDataElement
from pyquaternion import Quaternion

from autonomous_driving.bev_common.transforms import OCC_GT_KEYS

OCC_CLASSES = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
INFO_KEYS = (
    "occ_gt_path",
    "token",
    "lidar_path",
    "sweeps",
    "ego2global_translation",
    "ego2global_rotation",
    "lidar2ego_translation",
    "lidar2ego_rotation",
    "prev",
    "next",
    "scene_token",
    "frame_idx",
    "timestamp",
    "can_bus",
    "cams",
)
CAM_KEYS = ("data_path", "sensor2lidar_rotation", "sensor2lidar_translation", "cam_intrinsic")


def _pose(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """4x4 from a translation and a (w, x, y, z) quaternion."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(rotation).rotation_matrix
    m[:3, 3] = translation
    return m


def yaw_degrees(rotation: Sequence[float]) -> float:
    """Yaw of the rotated x axis (nuScenes ``quaternion_yaw``), in degrees in [0, 360)."""
    x = Quaternion(rotation).rotate([1.0, 0.0, 0.0])
    deg = float(np.degrees(np.arctan2(x[1], x[0])))
    return deg + 360.0 if deg < 0 else deg


@DATASETS.register_module()
class NuSceneOcc(BaseDataset):
    """Occ3D-nuScenes with the temporal queue of the published BEVFormer-Occ.

    Args (published names): ``ann_file``, ``data_root``, ``pipeline``, ``test_mode``,
        ``queue_length`` (training queue length Q), ``bev_size`` (bev_h, bev_w), ``classes``
        (the published detection class names, used only by the dead box transforms; kept as
        ``box_classes``), ``load_interval``; ``overlap_test``, ``modality``, ``box_type_3d``,
        ``use_valid_flag``, ``filter_empty_gt`` are accepted and recorded (box-only or unused
        options: the occupancy path does not depend on them).
        ``pillar_h`` (ours): the Z size of the grid; the labels must be (bev_w, bev_h, pillar_h).
    """

    METAINFO = {"classes": OCC_CLASSES}

    def __init__(
        self,
        ann_file: str,
        pipeline: Sequence = (),
        data_root: str = "",
        queue_length: int = 4,
        bev_size: Sequence[int] = (200, 200),
        pillar_h: int = 16,
        classes: Sequence[str] | None = None,
        load_interval: int = 1,
        overlap_test: bool = False,
        modality: dict | None = None,
        box_type_3d: str = "LiDAR",
        use_valid_flag: bool = False,
        filter_empty_gt: bool = False,
        test_mode: bool = False,
        **kwargs,
    ):
        if queue_length < 1:
            raise ValueError(f"NuSceneOcc: queue_length must be >= 1, got {queue_length}")
        if len(bev_size) != 2:
            raise ValueError(f"NuSceneOcc: bev_size must be (bev_h, bev_w), got {bev_size}")
        self.queue_length = queue_length
        self.bev_size = tuple(int(v) for v in bev_size)
        self.occ_shape = (self.bev_size[1], self.bev_size[0], int(pillar_h))  # labels are (x, y, z)
        self.box_classes = tuple(classes) if classes is not None else None
        self.load_interval = load_interval
        self.overlap_test, self.modality, self.box_type_3d = overlap_test, modality, box_type_3d
        self.use_valid_flag, self.filter_empty_gt = use_valid_flag, filter_empty_gt
        # published configs give ann_file with data_root already in front of it
        if (
            data_root
            and not os.path.isabs(ann_file)
            and not os.path.exists(os.path.join(data_root, ann_file))
        ):
            prefixed = os.path.normpath(ann_file).startswith(os.path.normpath(data_root) + os.sep)
            if prefixed or os.path.exists(ann_file):
                ann_file = os.path.abspath(ann_file)
        super().__init__(
            ann_file=ann_file, data_root=data_root, pipeline=list(pipeline), test_mode=test_mode, **kwargs
        )

    # ------------------------------------------------------------------ loading
    def load_data_list(self) -> list[dict]:
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(
                f"NuSceneOcc: ann_file {self.ann_file} not found (data_root={self.data_root!r}); "
                "create it with `tools/create_data.py occ`"
            )
        data = fileio.load(self.ann_file, file_format="pkl")
        if not isinstance(data, dict) or "infos" not in data:
            raise ValueError(f"NuSceneOcc: {self.ann_file} must hold {{'infos': [...], 'metadata': ...}}")
        infos = data["infos"]
        for k, info in enumerate(infos):
            missing = [key for key in INFO_KEYS if key not in info]
            missing += [
                f"cams[{cam}].{key}"
                for cam, c in info.get("cams", {}).items()
                for key in CAM_KEYS
                if key not in c
            ]
            if missing:
                raise KeyError(
                    f"NuSceneOcc: info {k} (token {info.get('token')}) of {self.ann_file} lacks {missing}"
                )
            if np.shape(info["can_bus"]) != (18,):
                raise ValueError(
                    f"NuSceneOcc: info {k} can_bus must have 18 values, got {np.shape(info['can_bus'])}"
                )
            if not info["cams"]:
                raise ValueError(f"NuSceneOcc: info {k} (token {info['token']}) has no cameras")
        self.metadata = data.get("metadata", {})
        return sorted(infos, key=lambda e: e["timestamp"])[:: self.load_interval]

    def _image_path(self, path: str) -> str:
        """The info's path as it is (the published converter writes root-prefixed paths); when
        that does not exist, under data_root from its ``samples/`` or ``sweeps/`` part (a moved dataset)."""
        if os.path.exists(path) or not self.data_root:
            return path
        parts = path.replace("\\", "/").split("/")
        for anchor in ("samples", "sweeps"):
            if anchor in parts:
                moved = os.path.join(self.data_root, *parts[parts.index(anchor) :])
                if os.path.exists(moved):
                    return moved
        return path

    def get_data_info(self, idx: int) -> dict:
        """The published per-frame input dict, with lidar2img / ego2lidar / lidar2cam /
        cam_intrinsic derived and the CAN bus pose overwritten from the ego pose."""
        info = super().get_data_info(idx)
        ego2lidar = np.linalg.inv(_pose(info["lidar2ego_translation"], info["lidar2ego_rotation"]))
        result = dict(
            occ_gt_path=info["occ_gt_path"],
            sample_idx=info["token"],
            pts_filename=info["lidar_path"],
            sweeps=info["sweeps"],
            ego2global_translation=info["ego2global_translation"],
            ego2global_rotation=info["ego2global_rotation"],
            lidar2ego_translation=info["lidar2ego_translation"],
            lidar2ego_rotation=info["lidar2ego_rotation"],
            prev_idx=info["prev"],
            next_idx=info["next"],
            scene_token=info["scene_token"],
            frame_idx=info["frame_idx"],
            timestamp=info["timestamp"] / 1e6,
            ego2lidar=ego2lidar,
            index=idx,
        )
        filenames, lidar2img, lidar2cam, intrinsics = [], [], [], []
        for cam in info["cams"].values():
            filenames.append(self._image_path(cam["data_path"]))
            cam2lidar = np.eye(4)
            cam2lidar[:3, :3] = cam["sensor2lidar_rotation"]
            cam2lidar[:3, 3] = cam["sensor2lidar_translation"]
            l2c = np.linalg.inv(cam2lidar)
            viewpad = np.eye(4)
            viewpad[:3, :3] = cam["cam_intrinsic"]
            lidar2cam.append(l2c)
            intrinsics.append(viewpad)
            lidar2img.append(viewpad @ l2c)
        result.update(
            img_filename=filenames, lidar2img=lidar2img, lidar2cam=lidar2cam, cam_intrinsic=intrinsics
        )
        can_bus = np.array(info["can_bus"], dtype=np.float64)
        can_bus[:3] = info["ego2global_translation"]
        can_bus[3:7] = info["ego2global_rotation"]
        yaw = yaw_degrees(info["ego2global_rotation"])
        can_bus[-2] = yaw / 180 * np.pi
        can_bus[-1] = yaw
        result["can_bus"] = can_bus
        return result

    # ------------------------------------------------------------------ items
    def _frame(self, idx: int) -> dict:
        item = self.pipeline(self.get_data_info(idx))
        if not isinstance(item, dict) or not {"inputs", "data_samples"} <= set(item):
            raise ValueError(
                "NuSceneOcc: the pipeline must end with PackMultiViewInputs (it returned "
                f"{sorted(item) if isinstance(item, dict) else type(item).__name__})"
            )
        sample = item["data_samples"]
        for key in OCC_GT_KEYS:
            if key in sample and tuple(sample.get(key).shape) != self.occ_shape:
                raise ValueError(
                    f"NuSceneOcc: {key} of {sample.metainfo.get('occ_gt_path')} is "
                    f"{tuple(sample.get(key).shape)}, the config's grid (bev_w, bev_h, pillar_h) is "
                    f"{self.occ_shape}"
                )
        return item

    def prepare_data(self, idx: int) -> dict:
        if self.test_mode:
            frame = self._frame(idx)
            meta = frame["data_samples"].metainfo
            prev = idx - 1
            # informative only: at test time the detector resets its history on a new scene_token
            same_scene = prev >= 0 and super().get_data_info(prev)["scene_token"] == meta["scene_token"]
            meta["prev_bev_exists"] = bool(same_scene)
            return self._join([frame], [meta])
        earlier = list(range(idx - self.queue_length, idx))
        random.shuffle(earlier)
        indices = sorted(earlier[1:]) + [idx]
        frames = [self._frame(max(0, i)) for i in indices]
        return self.union2one(frames)

    def union2one(self, frames: list[dict]) -> dict:
        """Join a training queue (oldest first): per frame ``prev_bev_exists`` and the CAN bus
        made relative to the previous frame of the queue (translation [:3] and yaw degrees
        [-1]; zero on the first frame of a scene; the radians [-2] stay absolute)."""
        metas = [dict(f["data_samples"].metainfo) for f in frames]
        prev_scene, prev_pos, prev_angle = None, None, None
        for meta in metas:
            can_bus = np.array(meta["can_bus"], dtype=np.float64)
            pos, angle = can_bus[:3].copy(), float(can_bus[-1])
            if meta["scene_token"] != prev_scene:
                meta["prev_bev_exists"] = False
                can_bus[:3] = 0
                can_bus[-1] = 0
            else:
                meta["prev_bev_exists"] = True
                can_bus[:3] -= prev_pos
                can_bus[-1] -= prev_angle
            prev_scene, prev_pos, prev_angle = meta["scene_token"], pos, angle
            meta["can_bus"] = can_bus
        return self._join(frames, metas)

    @staticmethod
    def _join(frames: list[dict], metas: list[dict]) -> dict:
        shapes = {tuple(f["inputs"]["img"].shape) for f in frames}
        if len(shapes) != 1:
            raise ValueError(
                f"NuSceneOcc: the frames of a queue must share an image size, got {sorted(shapes)}"
            )
        last = frames[-1]["data_samples"]
        sample = BaseDataElement(metainfo={"img_metas": [copy.copy(m) for m in metas]})
        for key in last.keys():
            sample.set_data({key: last.get(key)})
        return {"inputs": {"img": torch.stack([f["inputs"]["img"] for f in frames])}, "data_samples": sample}
