# Mask R-CNN / Cascade Mask R-CNN with an InternImage backbone -> ONNX Runtime, static
# input shape (the model's test pipeline output for the conversion image).
#
# DCNv3 is exported in the portable form (standard operators; GridSample needs opset 16),
# so the file runs in any onnxruntime - mmdeploy's ORTWrapper and SDK, C++, other
# languages - without a custom-op library. The published opset 11 is kept for TensorRT,
# where DCNv3 is the TRTDCNv3 plugin node.
_base_ = [
    '../_base_/base_instance-seg_static.py',
    '../../../../../dense_common/deploy_configs/backends/onnxruntime.py',
]

onnx_config = dict(opset_version=16, dcnv3_form='portable')
