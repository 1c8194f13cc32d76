# TensorRT engines need two plugin libraries at build and run time: mmdeploy's own
# (NMS, RoIAlign, ...) and ours for TRTDCNv3 (tensorrt/README.md).
backend_config = dict(type='tensorrt', common_config=dict(fp16_mode=False, max_workspace_size=1 << 30))
