"""The layer-wise lr decay constructor, registered under mmdet's scope so that
``optim_wrapper=dict(constructor='CustomLayerDecayOptimizerConstructor', ...)`` resolves."""

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS

from dense_common.layer_decay import CustomLayerDecayOptimizerConstructor

OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=CustomLayerDecayOptimizerConstructor)

__all__ = ["CustomLayerDecayOptimizerConstructor"]
