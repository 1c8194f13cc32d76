# UperNet with an InternImage backbone -> ONNX Runtime, static 512x512 with argmax.
#
# DCNv3 is exported in the portable form (standard operators; GridSample needs opset 16),
# so the file runs in any onnxruntime without a custom-op library. The published opset 11
# is kept for TensorRT, where DCNv3 is the TRTDCNv3 plugin node.
_base_ = ['./segmentation_static.py', '../../../../dense_common/deploy_configs/backends/onnxruntime.py']

onnx_config = dict(input_shape=[512, 512], opset_version=16, dcnv3_form='portable')
