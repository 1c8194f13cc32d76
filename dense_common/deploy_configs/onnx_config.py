# ONNX settings shared by the InternImage deploy configs (mmdeploy 1.x keys; the same
# values as mmdeploy's configs/_base_/onnx_config.py, kept here because mmdeploy's wheel
# does not install its configs).
#
# `dcnv3_form` is ours (mmdeploy ignores it): the ONNX form DCNv3 takes in the export,
# read by detection/deploy.py and segmentation/deploy.py (see ops_dcnv3/export.py):
#   'plugin'   -> mmdeploy::TRTDCNv3 nodes (TensorRT plugin of tensorrt/; onnxruntime via
#                 ops_dcnv3.onnxruntime.make_session, which lowers them to DeformConv),
#                 any opset;
#   'portable' -> standard operators only: GridSample at opsets 16-18, DeformConv (faster)
#                 from 19. The onnxruntime configs stay at 16: mmdeploy's LayerNorm rewrite
#                 writes ReduceMean's pre-18 `axes` attribute, which opset 18+ refuses.
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
