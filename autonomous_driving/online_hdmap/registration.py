"""One import registers everything the VectorMapNet configs name (their single
``custom_imports`` entry): InternImage and the multi-view loader / data preprocessor of
``autonomous_driving.bev_common``, and the map dataset, transforms, metric and model of
this package, in mmdet's registries (the configs run with ``default_scope='mmdet'``)."""

from autonomous_driving.bev_common import backbone, data_preprocessor
from autonomous_driving.bev_common import transforms as multiview_transforms

from . import dataset, metric, transforms, vectormapnet

__all__ = [
    "backbone",
    "data_preprocessor",
    "dataset",
    "metric",
    "multiview_transforms",
    "transforms",
    "vectormapnet",
]
