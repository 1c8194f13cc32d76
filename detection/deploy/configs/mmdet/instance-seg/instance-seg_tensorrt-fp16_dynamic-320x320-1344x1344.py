# As instance-seg_tensorrt_dynamic-320x320-1344x1344.py, with float16 kernels (the
# TRTDCNv3 plugin runs float16 with float accumulation).
_base_ = ['./instance-seg_tensorrt_dynamic-320x320-1344x1344.py']

backend_config = dict(common_config=dict(fp16_mode=True))
