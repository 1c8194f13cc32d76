# Mask R-CNN / Cascade Mask R-CNN with an InternImage backbone -> ONNX Runtime, dynamic
# batch and input size. DCNv3 in the portable form at opset 16, as in
# instance-seg_onnxruntime_static.py.
_base_ = [
    '../_base_/base_instance-seg_dynamic.py',
    '../../../../../dense_common/deploy_configs/backends/onnxruntime.py',
]

onnx_config = dict(opset_version=16, dcnv3_form='portable')
