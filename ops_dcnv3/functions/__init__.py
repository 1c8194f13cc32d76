"""Published import path: ``from ops_dcnv3.functions import DCNv3Function, dcnv3_core_pytorch``."""

from ..ops import dcnv3
from ..reference import dcnv3_core_pytorch


class DCNv3Function:
    """``DCNv3Function.apply(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
    pad_h, pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
    im2col_step, remove_center)``, as published.

    Autograd, torch.compile and ONNX export come from the registered operator
    ``ops_dcnv3::dcnv3``; this class only keeps the entry point users call."""

    apply = staticmethod(dcnv3)


__all__ = ["DCNv3Function", "dcnv3", "dcnv3_core_pytorch"]
