# Mask R-CNN / Cascade Mask R-CNN with an InternImage backbone -> TensorRT 10, float32,
# dynamic input 320x320 .. 1344x1344. DCNv3 is exported as mmdeploy::TRTDCNv3 (opset 11),
# so the engine build needs our plugin library (tensorrt/README.md) besides mmdeploy's.
_base_ = [
    '../_base_/base_instance-seg_dynamic.py',
    '../../../../../dense_common/deploy_configs/backends/tensorrt.py',
]

onnx_config = dict(dcnv3_form='plugin')
backend_config = dict(
    common_config=dict(max_workspace_size=1 << 32),
    model_inputs=[
        dict(
            input_shapes=dict(
                input=dict(
                    min_shape=[1, 3, 320, 320],
                    opt_shape=[1, 3, 800, 1344],
                    max_shape=[1, 3, 1344, 1344])))
    ])
