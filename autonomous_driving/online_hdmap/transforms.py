"""The map pipeline of the published VectorMapNet configs as mmdet ``TRANSFORMS``
(driving_hdmap_params.md §6): ``VectorizeMap`` and ``PolygonizeLocalMapBbox`` (wrappers
over ``vectorize``), the image steps bev_common does not cover (``ResizeMultiViewImages``
to one fixed size, ``PadMultiViewImages`` with the published ego2img rescaling) and
``PackMapInputs`` (the published ``FormatBundleMap`` + ``Collect3D``).

Loading is bev_common's ``LoadMultiViewImageFromFiles`` (the dataset gives it
``img_filename``); the published ``Normalize3D`` happens in ``MultiViewDataPreprocessor``
(same mean/std/to_rgb; padding stays 0 after normalisation there, as published).

Packed item (the bev_common contract with one frame, Q = 1):
``{'inputs': {'img': uint8 (1, N, 3, H, W)}, 'data_samples': BaseDataElement}`` with
metainfo ``token``, ``ego2img`` (N float64 4x4, resize and pad applied), ``img_metas``
(one dict: ``token``, ``ego2img``, ``img_shape`` (N (h, w, 3) unpadded), ``pad_shape``,
``ego2img_pad_scaled``: whether ``PadMultiViewImages`` applied the published pad quirk, so
that ``VectorMapNet`` does not apply it a second time) and,
in training, the data fields ``polys`` (``polygonize_local_map_bbox`` output, ``[]`` for a
frame without lines) and ``vectors`` (``{label: [(n, 2) normalised]}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from autonomous_driving.bev_common.transforms import PackMultiViewInputs, _images

from .vectorize import BBOX_THRESHOLD, CANVAS_SIZE, ROI_SIZE, polygonize_local_map_bbox, vectorize_map

MAP_META_KEYS = ("token", "ego2img")


@TRANSFORMS.register_module()
class VectorizeMap(BaseTransform):
    """``map_geoms`` ``{label: [LineString]}`` -> ``vectors`` ``{label: [(n, coords_dim)]}``:
    z dropped, simplified by 0.2 m, normalised by ``(p - origin) / (roi + 2)``."""

    def __init__(
        self,
        coords_dim: int = 2,
        roi_size: Sequence[float] = ROI_SIZE,
        simplify: bool = True,
        normalize: bool = True,
    ) -> None:
        if coords_dim not in (2, 3):
            raise ValueError(f"VectorizeMap: coords_dim must be 2 or 3, got {coords_dim}")
        if len(roi_size) != 2:
            raise ValueError(f"VectorizeMap: roi_size must be (x, y) metres, got {roi_size}")
        self.coords_dim = coords_dim
        self.roi_size = tuple(float(v) for v in roi_size)
        self.simplify = simplify
        self.normalize = normalize

    def transform(self, results: dict) -> dict:
        if "map_geoms" not in results:
            raise KeyError(
                f"VectorizeMap: sample {results.get('token')} has no 'map_geoms' (an unannotated "
                "split: use the test pipeline)"
            )
        results["vectors"] = vectorize_map(
            results["map_geoms"], self.coords_dim, self.roi_size, self.simplify, self.normalize
        )
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(coords_dim={self.coords_dim}, roi_size={self.roi_size}, "
            f"simplify={self.simplify}, normalize={self.normalize})"
        )


@TRANSFORMS.register_module()
class PolygonizeLocalMapBbox(BaseTransform):
    """``vectors`` -> ``polys``: detector keypoints, generator condition boxes, vertex
    token sequences and their loss weights (``vectorize.polygonize_local_map_bbox``)."""

    def __init__(
        self,
        canvas_size: Sequence[int] = CANVAS_SIZE,
        coord_dim: int = 2,
        num_class: int = 3,
        threshold: float = BBOX_THRESHOLD,
    ) -> None:
        if len(canvas_size) != 2 or min(canvas_size) < 2:
            raise ValueError(
                f"PolygonizeLocalMapBbox: canvas_size must be (x, y) >= 2 cells, got {canvas_size}"
            )
        self.canvas_size = tuple(int(v) for v in canvas_size)
        self.coord_dim = coord_dim
        self.num_class = num_class
        self.threshold = threshold

    def transform(self, results: dict) -> dict:
        if "vectors" not in results:
            raise KeyError("PolygonizeLocalMapBbox: no 'vectors' in the results: put VectorizeMap before it")
        results["polys"] = polygonize_local_map_bbox(
            results["vectors"], self.canvas_size, self.coord_dim, self.num_class, self.threshold
        )
        return results


def _scale_rows(mat: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """``diag(sx, sy, 1, 1) @ mat``: pixel rows of a 4x4 ego -> image matrix rescaled."""
    return np.diag([sx, sy, 1.0, 1.0]) @ np.asarray(mat, dtype=np.float64)


@TRANSFORMS.register_module()
class ResizeMultiViewImages(BaseTransform):
    """Every camera to one ``size`` (h, w) with ``mmcv.imresize`` (cv2 bilinear), ignoring the
    aspect ratio; ``ego2img`` <- ``diag(w/W0, h/H0, 1, 1) @ ego2img`` and the intrinsics
    likewise when ``change_intrinsics`` (published default)."""

    def __init__(self, size: Sequence[int], change_intrinsics: bool = True) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"ResizeMultiViewImages: size must be (h, w) positive, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.change_intrinsics = change_intrinsics

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "ResizeMultiViewImages")
        h, w = self.size
        factors = [(w / img.shape[1], h / img.shape[0]) for img in imgs]
        results["img"] = [mmcv.imresize(img, (w, h), return_scale=False) for img in imgs]
        if self.change_intrinsics:
            results["ego2img"] = [
                _scale_rows(m, sx, sy) for m, (sx, sy) in zip(_ego2img(results), factors, strict=True)
            ]
            if "intrinsics" in results:
                results["intrinsics"] = [
                    np.diag([sx, sy, 1.0]) @ np.asarray(k, dtype=np.float64)
                    for k, (sx, sy) in zip(results["intrinsics"], factors, strict=True)
                ]
        results["img_shape"] = [img.shape for img in results["img"]]
        results["scale_factor"] = factors
        return results


def _ego2img(results: dict) -> list[np.ndarray]:
    mats = results.get("ego2img")
    n = len(results["img"])
    if mats is None or len(mats) != n:
        raise KeyError(
            f"sample {results.get('token')}: 'ego2img' must hold one 4x4 per camera ({n}), got "
            f"{None if mats is None else len(mats)}"
        )
    return list(mats)


@TRANSFORMS.register_module()
class PadMultiViewImages(BaseTransform):
    """Pad each camera bottom/right with ``pad_val`` to ``size`` (h, w) or a multiple of
    ``size_divisor``. ``img_shape`` stays the unpadded size, ``pad_shape`` is the padded one.

    **Published quirk** (``change_intrinsics=True``, the published config): rows 0 and 1 of
    ``ego2img`` are multiplied by ``padded / unpadded`` width and height, as if padding were a
    resize (480/455 for the published 455-wide images). With the IPM's normalisation by the
    padded size this stretches the image content over the whole padded feature map. The
    published model is trained and evaluated so; ``change_intrinsics=False`` is the plain pad.
    """

    def __init__(
        self,
        size: Sequence[int] | None = None,
        size_divisor: int | None = None,
        pad_val: float = 0,
        change_intrinsics: bool = False,
    ) -> None:
        if (size is None) == (size_divisor is None):
            raise ValueError("PadMultiViewImages: give exactly one of size and size_divisor")
        if size_divisor is not None and size_divisor < 1:
            raise ValueError(f"PadMultiViewImages: size_divisor must be >= 1, got {size_divisor}")
        self.size = tuple(int(v) for v in size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.change_intrinsics = change_intrinsics

    def transform(self, results: dict) -> dict:
        imgs = _images(results, "PadMultiViewImages")
        if self.size is not None:
            padded = [mmcv.impad(img, shape=self.size, pad_val=self.pad_val) for img in imgs]
        else:
            padded = [mmcv.impad_to_multiple(img, self.size_divisor, pad_val=self.pad_val) for img in imgs]
        if self.change_intrinsics:
            results["ego2img"] = [
                _scale_rows(m, p.shape[1] / i.shape[1], p.shape[0] / i.shape[0])
                for m, p, i in zip(_ego2img(results), padded, imgs, strict=True)
            ]
        # VectorMapNet applies the quirk itself unless the frame meta says it is done.
        results["ego2img_pad_scaled"] = self.change_intrinsics
        results["img_shape"] = [img.shape for img in imgs]
        results["img"] = padded
        results["pad_shape"] = [img.shape for img in padded]
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor}, "
            f"pad_val={self.pad_val}, change_intrinsics={self.change_intrinsics})"
        )


@TRANSFORMS.register_module()
class PackMapInputs(BaseTransform):
    """The published ``FormatBundleMap`` + ``Collect3D(keys, meta_keys)`` in the bev_common
    contract's form (module docstring). ``keys``: ``img`` (always packed) and the ground-truth
    entries to keep as data fields (published train: ``polys``, ``vectors``); ``meta_keys``:
    copied into the metainfo and into the one frame meta ``img_metas[0]``."""

    def __init__(self, keys: Sequence[str] = ("img",), meta_keys: Sequence[str] = MAP_META_KEYS) -> None:
        self.keys = tuple(k for k in keys if k != "img")
        self.meta_keys = tuple(meta_keys)
        self._pack = PackMultiViewInputs(keys=(), meta_keys=())

    def transform(self, results: dict) -> dict:
        packed = self._pack.transform(results)
        missing = [k for k in self.meta_keys if k not in results]
        if missing:
            raise KeyError(f"PackMapInputs: meta key(s) {missing} not in the results")
        meta = {k: results[k] for k in self.meta_keys}
        frame_meta = dict(meta)
        for key in ("img_shape", "pad_shape", "ori_shape", "scale_factor", "ego2img_pad_scaled"):
            if key in results:
                frame_meta[key] = results[key]
        sample = packed["data_samples"]
        sample.set_metainfo({**meta, "img_metas": [frame_meta]})
        for key in self.keys:
            if key not in results:
                raise KeyError(
                    f"PackMapInputs: '{key}' is not in the results of sample {results.get('token')} "
                    "(VectorizeMap / PolygonizeLocalMapBbox make 'vectors' / 'polys')"
                )
            sample.set_data({key: results[key]})
        return {"inputs": {"img": packed["inputs"]["img"][None]}, "data_samples": sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={('img', *self.keys)}, meta_keys={self.meta_keys})"
