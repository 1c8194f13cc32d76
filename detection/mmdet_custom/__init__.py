"""InternImage plugin for mmdet 3.x, loaded by configs through
``custom_imports=dict(imports=['mmdet_custom'], allow_failed_imports=False)``.

Importing it installs the torch 2.14 run-time fixes (``dense_common.stack_compat``) and
registers, in mmdet's registries: the ``InternImage`` and ``CBInternImage`` backbones, the
``CBDINO`` detector (mmdet's DINO trained on both trunks of CBInternImage), the G config's
``EfficientFFN``, the ``CustomLayerDecayOptimizerConstructor`` and the
``CrowdHumanOdgtDataset``. Published DINO checkpoints (mmdet 2 layout) convert on load
(``dense_common.checkpoint_conversion``)."""

from dense_common import checkpoint_conversion, stack_compat

stack_compat.apply()
checkpoint_conversion.install()  # published DINO / Mask2Former files load as they are

from .backbones import CBInternImage, InternImage  # noqa: E402
from .cb_dino import CBDINO  # noqa: E402
from .crowd_human import CrowdHumanOdgtDataset  # noqa: E402
from .efficient_ffn import EfficientFFN  # noqa: E402
from .efficient_ffn import install as _install_typed_ffn  # noqa: E402
from .optim import CustomLayerDecayOptimizerConstructor  # noqa: E402

_install_typed_ffn()

__all__ = ["CBDINO", "CBInternImage", "CrowdHumanOdgtDataset", "CustomLayerDecayOptimizerConstructor",
           "EfficientFFN", "InternImage"]
