"""Multi-view camera transforms (mmdet ``TRANSFORMS``), with the published BEVFormer names and
arguments, on results dicts whose ``img`` is a list of N per-camera (H, W, 3) arrays.

Normalisation and padding: the published pipelines list ``NormalizeMultiviewImage`` and
``PadMultiViewImage``; our configs normalise and pad in ``MultiViewDataPreprocessor`` instead
(batched, on the model's device). Both routes work and never normalise twice:
``NormalizeMultiviewImage`` records ``img_norm_cfg`` in the frame's meta and the preprocessor
skips its own normalisation for such samples (and refuses a config whose two mean/std
disagree); padding is idempotent (the preprocessor pads to the batch's /32 size either way).
Unlike the published ``PadMultiViewImage``, ``img_shape`` keeps the unpadded size; the padded
size is ``pad_shape``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PhotoMetricDistortion
from mmdet.registry import TRANSFORMS
from mmengine import fileio
from mmengine.structures import BaseDataElement

OCC_GT_KEYS = ("voxel_semantics", "mask_lidar", "mask_camera")
DEFAULT_META_KEYS = (
    "filename",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "img_norm_cfg",
    "lidar2img",
    "lidar2cam",
    "cam_intrinsic",
    "ego2lidar",
    "can_bus",
    "scene_token",
    "sample_idx",
    "index",
    "prev_idx",
    "next_idx",
    "frame_idx",
    "timestamp",
    "pts_filename",
    "occ_gt_path",
    "ego2global_translation",
    "ego2global_rotation",
    "lidar2ego_translation",
    "lidar2ego_rotation",
)


def _images(results: dict, transform: str) -> list[np.ndarray]:
    imgs = results.get("img")
    if not isinstance(imgs, list) or not imgs:
        raise KeyError(
            f"{transform}: results['img'] must be the non-empty list of camera images "
            "that LoadMultiViewImageFromFiles produces"
        )
    return imgs


@TRANSFORMS.register_module()
class LoadMultiViewImageFromFiles(BaseTransform):
    """Read ``results['img_filename']`` (N paths) into ``results['img']`` (list of BGR arrays).

    Args:
        to_float32: cast to float32 (the photometric distortion needs it).
        color_type: mmcv ``imfrombytes`` flag (published default 'unchanged').
        backend_args: mmengine file backend arguments.
    """

    def __init__(
        self, to_float32: bool = False, color_type: str = "unchanged", backend_args: dict | None = None
    ):
        self.to_float32 = to_float32
        self.color_type = color_type
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        filenames = results.get("img_filename")
        if not filenames:
            raise KeyError(
                "LoadMultiViewImageFromFiles: results['img_filename'] (the camera paths) is missing"
            )
        imgs = []
        for name in filenames:
            try:
                raw = fileio.get(name, backend_args=self.backend_args)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"camera image {name} not found (sample {results.get('sample_idx')})"
                ) from err
            img = mmcv.imfrombytes(raw, flag=self.color_type)
            if img is None or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"camera image {name} did not decode to an (H, W, 3) image")
            imgs.append(img.astype(np.float32) if self.to_float32 else img)
        results["filename"] = list(filenames)
        results["img"] = imgs
        results["img_shape"] = [img.shape for img in imgs]
        results["ori_shape"] = [img.shape for img in imgs]
        results["scale_factor"] = 1.0
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(to_float32={self.to_float32}, color_type={self.color_type!r})"


@TRANSFORMS.register_module()
class NormalizeMultiviewImage(BaseTransform):
    """``(img[, BGR→RGB] - mean) / std`` per camera, float32; records ``img_norm_cfg``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        if self.mean.shape != (3,) or self.std.shape != (3,) or np.any(self.std == 0):
            raise ValueError(
                f"NormalizeMultiviewImage: mean and std need 3 values, std non-zero; got {mean}, {std}"
            )
        self.to_rgb = to_rgb

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "NormalizeMultiviewImage")
        results["img"] = [
            mmcv.imnormalize(img.astype(np.float32), self.mean, self.std, self.to_rgb) for img in imgs
        ]
        results["img_norm_cfg"] = dict(mean=self.mean, std=self.std, to_rgb=self.to_rgb)
        return results


@TRANSFORMS.register_module()
class PadMultiViewImage(BaseTransform):
    """Pad each camera image bottom/right to ``size`` (h, w) or to a multiple of ``size_divisor``;
    sets ``pad_shape`` (``img_shape`` stays the unpadded size, see the module docstring)."""

    def __init__(
        self, size: Sequence[int] | None = None, size_divisor: int | None = None, pad_val: float = 0
    ):
        if (size is None) == (size_divisor is None):
            raise ValueError("PadMultiViewImage: give exactly one of size and size_divisor")
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "PadMultiViewImage")
        if self.size is not None:
            padded = [mmcv.impad(img, shape=self.size, pad_val=self.pad_val) for img in imgs]
        else:
            padded = [mmcv.impad_to_multiple(img, self.size_divisor, pad_val=self.pad_val) for img in imgs]
        results["img"] = padded
        results["pad_shape"] = [img.shape for img in padded]
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        return results


@TRANSFORMS.register_module()
class PhotoMetricDistortionMultiViewImage(BaseTransform):
    """mmdet's ``PhotoMetricDistortion`` (brightness, contrast, saturation, hue, channel swap;
    each with p = 0.5) drawn independently per camera, on float32 images as published."""

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        self.distort = PhotoMetricDistortion(brightness_delta, contrast_range, saturation_range, hue_delta)

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "PhotoMetricDistortionMultiViewImage")
        if any(img.dtype != np.float32 for img in imgs):
            raise TypeError(
                "PhotoMetricDistortionMultiViewImage needs float32 images: set to_float32=True in "
                "LoadMultiViewImageFromFiles"
            )
        results["img"] = [self.distort.transform({"img": img})["img"] for img in imgs]
        return results


@TRANSFORMS.register_module()
class RandomScaleImageMultiViewImage(BaseTransform):
    """Resize every camera by one scale drawn from ``scales``; ``lidar2img`` and ``cam_intrinsic``
    follow the resize, so a 3D point projects onto the resized pixel.

    The new size is ``int(w*s), int(h*s)`` as published; the matrices use the actual ratios
    ``new/old`` per axis (identical to the published ``s`` whenever w*s and h*s are integers,
    e.g. 1600x900 at 0.2 / 0.8)."""

    def __init__(self, scales: Sequence[float] = (0.5,)):
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"RandomScaleImageMultiViewImage: scales must be positive numbers, got {scales}")
        self.scales = list(scales)

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "RandomScaleImageMultiViewImage")
        scale = self.scales[np.random.randint(len(self.scales))]
        out, mats = [], []
        for img in imgs:
            h, w = img.shape[:2]
            new_w, new_h = int(w * scale), int(h * scale)
            if new_w < 1 or new_h < 1:
                raise ValueError(f"RandomScaleImageMultiViewImage: scale {scale} makes a {w}x{h} image empty")
            out.append(mmcv.imresize(img, (new_w, new_h), return_scale=False))
            m = np.eye(4)
            m[0, 0], m[1, 1] = new_w / w, new_h / h
            mats.append(m)
        results["img"] = out
        if "lidar2img" in results:
            results["lidar2img"] = [m @ l2i for m, l2i in zip(mats, results["lidar2img"], strict=True)]
        if "cam_intrinsic" in results:
            scaled = []
            for m, k in zip(mats, results["cam_intrinsic"], strict=True):
                k = np.array(k, dtype=np.float64)
                k[:2] = m[:2, :2] @ k[:2] if k.shape[0] == 3 else (m @ k)[:2]
                scaled.append(k)
            results["cam_intrinsic"] = scaled
        results["img_shape"] = [img.shape for img in out]
        results["ori_shape"] = [img.shape for img in out]  # as published: later steps see the new size
        results["scale_factor"] = scale
        return results


@TRANSFORMS.register_module()
class LoadOccGTFromFile(BaseTransform):
    """Read ``gts/<scene>/<token>/labels.npz`` (``semantics``, ``mask_lidar``, ``mask_camera``)
    into ``voxel_semantics`` / ``mask_lidar`` / ``mask_camera`` (uint8, (X, Y, Z)).

    Args:
        data_root: joined in front of the info's ``occ_gt_path`` (published argument).
        backend_args: mmengine file backend arguments.
    """

    def __init__(self, data_root: str | None = None, backend_args: dict | None = None):
        self.data_root = data_root
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        if "occ_gt_path" not in results:
            raise KeyError(
                "LoadOccGTFromFile: results['occ_gt_path'] is missing (the info lacks occ_gt_path)"
            )
        path = results["occ_gt_path"]
        if path is None:  # the converter writes None for the unlabelled v1.0-test split
            raise ValueError(
                f"sample {results.get('sample_idx')} has no occupancy labels (test split): "
                "drop LoadOccGTFromFile from the pipeline"
            )
        if self.data_root:
            path = os.path.join(self.data_root, path)
        try:
            raw = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"occupancy labels {path} not found (sample {results.get('sample_idx')}; "
                f"LoadOccGTFromFile data_root={self.data_root!r})"
            ) from err
        with np.load(io.BytesIO(raw)) as npz:
            missing = {"semantics", "mask_lidar", "mask_camera"} - set(npz.files)
            if missing:
                raise KeyError(f"{path} lacks {sorted(missing)} (has {npz.files})")
            arrays = {k: npz[k] for k in ("semantics", "mask_lidar", "mask_camera")}
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(
                f"{path}: semantics/mask_lidar/mask_camera must share one (X, Y, Z) shape, got "
                f"{ {k: a.shape for k, a in arrays.items()} }"
            )
        if arrays["semantics"].size and int(arrays["semantics"].max()) > 17:
            raise ValueError(f"{path}: semantics holds {int(arrays['semantics'].max())}, labels are 0..17")
        results["voxel_semantics"] = arrays["semantics"].astype(np.uint8)
        results["mask_lidar"] = arrays["mask_lidar"].astype(np.uint8)
        results["mask_camera"] = arrays["mask_camera"].astype(np.uint8)
        return results


@TRANSFORMS.register_module()
class PackMultiViewInputs(BaseTransform):
    """One frame into ``{'inputs': {'img': (N, 3, H, W)}, 'data_samples': BaseDataElement}``:
    ``keys`` become tensor data fields (missing ones raise), ``meta_keys`` present in the
    results go to the metainfo. Replaces the published ``DefaultFormatBundle3D`` +
    ``CustomCollect3D`` pair; the dataset joins the frames of a temporal queue."""

    def __init__(self, keys: Sequence[str] = OCC_GT_KEYS, meta_keys: Sequence[str] = DEFAULT_META_KEYS):
        self.keys = tuple(k for k in keys if k != "img")  # 'img' (published keys list) is always packed
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "PackMultiViewInputs")
        if len({img.shape for img in imgs}) != 1:
            raise ValueError(
                f"PackMultiViewInputs: the cameras of one frame must share a size, got "
                f"{[img.shape for img in imgs]}; resize or pad them first"
            )
        img = torch.from_numpy(np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2)))
        sample = BaseDataElement(metainfo={k: results[k] for k in self.meta_keys if k in results})
        for key in self.keys:
            if key not in results:
                raise KeyError(
                    f"PackMultiViewInputs: '{key}' is not in the results (load it first, or drop it "
                    "from keys)"
                )
            sample.set_data({key: torch.from_numpy(np.ascontiguousarray(results[key]))})
        return {"inputs": {"img": img}, "data_samples": sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys})"
