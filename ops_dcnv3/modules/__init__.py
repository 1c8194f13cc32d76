"""Published import path: ``from ops_dcnv3.modules import DCNv3, DCNv3_pytorch``."""

from .dcnv3 import DCNv3, DCNv3_pytorch
from .layers import ToChannelsFirst, ToChannelsLast, build_act_layer, build_norm_layer

__all__ = ["DCNv3", "DCNv3_pytorch", "ToChannelsFirst", "ToChannelsLast", "build_act_layer",
           "build_norm_layer"]
