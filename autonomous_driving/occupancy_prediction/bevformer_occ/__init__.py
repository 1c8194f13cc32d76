"""BEVFormer-Occ on mmengine / mmdet 3: importing this package registers, in mmdet's
registries, everything the configs name (one ``custom_imports`` entry): the shared BEV stack
(``autonomous_driving.bev_common``: InternImage, GridMask, the BEVFormer attentions and encoder,
the multi-view transforms, data preprocessor and the contiguous test sampler) and the
occupancy pieces here (detector, head, transformer, dataset, metric)."""

from autonomous_driving.bev_common import (
    attention,
    backbone,
    data_preprocessor,
    encoder,
    grid_mask,
    samplers,
    transforms,
)

from . import dataset, detector, head, metric, transformer
from .dataset import NuSceneOcc
from .detector import BEVFormerOcc
from .head import BEVFormerOccHead
from .metric import OccMetric
from .transformer import TransformerOcc

__all__ = [
    "BEVFormerOcc", "BEVFormerOccHead", "NuSceneOcc", "OccMetric", "TransformerOcc", "attention", "backbone",
    "data_preprocessor", "dataset", "detector", "encoder", "grid_mask", "head", "metric", "samplers",
    "transformer", "transforms",
]
