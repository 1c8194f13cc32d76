"""InternImage plugin for mmseg 1.x. Configs load it with
``custom_imports=dict(imports=['mmseg_custom'], allow_failed_imports=False)``.

Importing it makes mmengine checkpoints resumable on today's torch
(``dense_common.stack_compat``) and registers, in mmseg's registries:

- ``InternImage`` (MODELS): the shared dense backbone ``dense_common.InternImageBackbone``;
- ``CustomLayerDecayOptimizerConstructor`` (OPTIM_WRAPPER_CONSTRUCTORS);
- ``NYUDepthV2Dataset`` (40-class NYU-Depth-V2 segmentation) and
  ``MapillaryCityscapesDataset`` (Mapillary Vistas with labels mapped onto Cityscapes'
  19 classes), which mmseg 1.2 lacks (DATASETS);
- ``CityscapesSubmissionMetric`` (METRICS): ``test.py --format-only`` files for the
  Cityscapes server.

Published Mask2Former checkpoints (mmseg 0.x layout) convert on load
(``dense_common.checkpoint_conversion``).

Mask2Former is mmseg's own ``Mask2FormerHead`` (it needs ``mmdet.models`` imported)."""

from dense_common import checkpoint_conversion, stack_compat

stack_compat.apply()
checkpoint_conversion.install()  # published DINO / Mask2Former files load as they are

from .datasets import MapillaryCityscapesDataset, NYUDepthV2Dataset  # noqa: E402
from .models import CustomLayerDecayOptimizerConstructor, InternImage  # noqa: E402
from .palettes import PALETTES, palette_meta  # noqa: E402
from .submission import CityscapesSubmissionMetric  # noqa: E402

__all__ = ["PALETTES", "CityscapesSubmissionMetric", "CustomLayerDecayOptimizerConstructor", "InternImage",
           "MapillaryCityscapesDataset",
           "NYUDepthV2Dataset", "palette_meta"]
