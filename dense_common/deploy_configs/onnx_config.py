# ONNX settings shared by the InternImage deploy configs (mmdeploy 1.x keys; the same
# values as mmdeploy's configs/_base_/onnx_config.py, kept here because mmdeploy's wheel
# does not install its configs).
#
# `dcnv3_form` is ours (mmdeploy ignores it): the ONNX form DCNv3 takes in the export,
# read by detection/deploy.py and segmentation/deploy.py (see ops_dcnv3/export.py):
#   'plugin'   -> mmdeploy::TRTDCNv3 nodes (TensorRT plugin of tensorrt/; onnxruntime via
#                 ops_dcnv3.onnxruntime.make_session), any opset;
#   'portable' -> standard operators only (GridSample), needs opset >= 16.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=False,
    dcnv3_form='plugin')
