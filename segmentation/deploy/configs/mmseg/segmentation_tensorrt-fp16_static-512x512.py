# As segmentation_tensorrt_static-512x512.py, with float16 kernels.
_base_ = ['./segmentation_tensorrt_static-512x512.py']

backend_config = dict(common_config=dict(fp16_mode=True))
