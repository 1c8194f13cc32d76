"""One import registers everything the ROAD_BEVFormer configs name (their single
``custom_imports`` entry), in mmdet's registries (the configs run with
``default_scope='mmdet'``): from ``autonomous_driving.bev_common`` InternImage, the BEVFormer
attentions and encoder, the multi-view transforms and the data preprocessor; from this
package the dataset, the pipeline steps, the metric and the model (detector, BEV
constructor, lane, traffic-element and relationship heads)."""

from autonomous_driving.bev_common import attention, backbone, data_preprocessor, encoder
from autonomous_driving.bev_common import transforms as multiview_transforms

from . import (
    bev_constructor,
    dataset,
    lane_head,
    metric,
    pipeline,
    relationship_head,
    road_bevformer,
    te_head,
    transforms,
)

__all__ = [
    "attention", "backbone", "bev_constructor", "data_preprocessor", "dataset", "encoder", "lane_head",
    "metric", "multiview_transforms", "pipeline", "relationship_head", "road_bevformer", "te_head",
    "transforms",
]
