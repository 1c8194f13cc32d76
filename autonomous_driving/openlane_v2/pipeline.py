"""The published pipeline steps of this baseline that ``transforms`` (ResizeFrontView,
CustomParameterizeLane) and ``bev_common.transforms`` do not already provide, under their
published names (driving_openlane_params.md §1.2), in mmdet ``TRANSFORMS``:

- ``CustomLoadMultiViewImageFromFiles``: the bev_common loader with the published reading
  (``mmcv.imread``: 3-channel BGR) and the ``img_paths`` meta;
- ``CustomPadMultiViewImage``: the bev_common padding (``img_shape`` kept, ``pad_shape`` set);
- ``PackOpenLaneInputs``: the published ``CustomDefaultFormatBundle`` + ``Collect`` pair, as
  the bev_common contract item ``{'inputs': {'img': (1, N, 3, H, W)}, 'data_samples'}`` with
  the GT as tensor data fields and ``metainfo['img_metas'] = [meta]`` (one frame: the model
  has no temporal queue).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import TRANSFORMS
from mmengine.structures import BaseDataElement

from autonomous_driving.bev_common.transforms import (
    LoadMultiViewImageFromFiles,
    PackMultiViewInputs,
    PadMultiViewImage,
)

from .dataset import GT_KEYS

PUBLISHED_META_KEYS = (
    "scene_token", "sample_idx", "img_paths", "img_shape", "scale_factor", "pad_shape", "lidar2img",
    "can_bus",
)
# ours beside the published ones: the frame's token for the metric, the normalisation record the
# data preprocessor reads (normalise once), the other camera matrices
META_KEYS = PUBLISHED_META_KEYS + (
    "token", "split", "timestamp", "ori_shape", "img_norm_cfg", "lidar2cam", "cam_intrinsic", "cameras",
)


@TRANSFORMS.register_module()
class CustomLoadMultiViewImageFromFiles(LoadMultiViewImageFromFiles):
    """Read the cameras' images (``results['img_filename']``, front first) as BGR
    ``(H, W, 3)`` arrays, float32 with ``to_float32`` (the published photometric distortion
    needs it); records ``img_paths``."""

    def __init__(self, to_float32: bool = False, color_type: str = "color", backend_args: dict | None = None):
        super().__init__(to_float32=to_float32, color_type=color_type, backend_args=backend_args)

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        results["img_paths"] = list(results["filename"])
        return results


@TRANSFORMS.register_module()
class CustomPadMultiViewImage(PadMultiViewImage):
    """Pad every camera bottom/right with ``pad_val`` to ``size`` or a multiple of
    ``size_divisor`` (published: 32, giving 1568x2048 for the AV2 ring)."""


@TRANSFORMS.register_module()
class PackOpenLaneInputs(PackMultiViewInputs):
    """Tensors of ``keys`` (default: the published Collect GT keys; the test pipeline gives
    ``keys=['img']``) as data fields, ``meta_keys`` into the one frame meta."""

    def __init__(self, keys: Sequence[str] = ("img", *GT_KEYS), meta_keys: Sequence[str] = META_KEYS):
        super().__init__(keys=keys, meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        frame = packed["data_samples"]
        sample = BaseDataElement(metainfo={"img_metas": [dict(frame.metainfo)]})
        for key in frame.keys():
            sample.set_data({key: frame.get(key)})
        return {"inputs": {"img": packed["inputs"]["img"][None]}, "data_samples": sample}
