"""DCNv3, the deformable convolution of InternImage: one operator schema
(``torch.ops.ops_dcnv3.dcnv3``) with C++ CPU and CUDA kernels, a pure-PyTorch
reference, autograd, fake kernels for torch.compile/torch.export, and ONNX export.
Its second operator, multi-scale deformable attention, lives in :mod:`ops_dcnv3.msda`."""

from . import msda  # (registers the MSDA op's autograd, fake kernels and ONNX symbolic)
from .ops import KERNEL_DEVICES, dcnv3, extension_available, kernel_available
from .reference import dcnv3_core_pytorch

__all__ = ["KERNEL_DEVICES", "dcnv3", "dcnv3_core_pytorch", "extension_available",
           "kernel_available", "msda"]
