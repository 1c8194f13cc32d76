"""InternImage plugin for mmdet 3.x, loaded by configs through
``custom_imports=dict(imports=['mmdet_custom'], allow_failed_imports=False)``.

Importing it installs the torch 2.14 run-time fixes (``dense_common.stack_compat``) and
registers, in mmdet's registries: the ``InternImage`` and ``CBInternImage`` backbones, the
``CBDINO`` detector (mmdet's DINO trained on both trunks of CBInternImage), the
``CustomLayerDecayOptimizerConstructor`` and the ``CrowdHumanOdgtDataset``."""

from dense_common import stack_compat

stack_compat.apply()

from .backbones import CBInternImage, InternImage  # noqa: E402
from .cb_dino import CBDINO  # noqa: E402
from .crowd_human import CrowdHumanOdgtDataset  # noqa: E402
from .optim import CustomLayerDecayOptimizerConstructor  # noqa: E402

__all__ = ["CBDINO", "CBInternImage", "CrowdHumanOdgtDataset", "CustomLayerDecayOptimizerConstructor",
           "InternImage"]
