"""What the detection (mmdet 3.x) and segmentation (mmseg 1.x) plugins share: the
InternImage backbone wrapper, the layer-wise lr decay optimizer constructor, the
DCNv3 FLOP term and the run-time shims for today's torch (``stack_compat``).

Nothing here registers itself: ``mmdet_custom`` and ``mmseg_custom`` register these
classes in their own registries, so each framework finds them under its scope."""

from . import quiet  # noqa: F401, I001 - first: filters the stack's import-time warnings
from .backbone import InternImageBackbone
from .layer_decay import CustomLayerDecayOptimizerConstructor, layer_id

__all__ = ["CustomLayerDecayOptimizerConstructor", "InternImageBackbone", "layer_id"]
