# UperNet with an InternImage backbone -> TensorRT 10, float32, static 512x512 with argmax.
# DCNv3 is exported as mmdeploy::TRTDCNv3 (opset 11): build with our plugin library
# (tensorrt/README.md).
_base_ = ['./segmentation_static.py', '../../../../dense_common/deploy_configs/backends/tensorrt.py']

onnx_config = dict(input_shape=[512, 512], dcnv3_form='plugin')
backend_config = dict(
    model_inputs=[
        dict(
            input_shapes=dict(
                input=dict(
                    min_shape=[1, 3, 512, 512],
                    opt_shape=[1, 3, 512, 512],
                    max_shape=[1, 3, 512, 512])))
    ])
