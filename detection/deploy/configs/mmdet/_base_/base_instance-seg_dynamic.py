_base_ = ['./base_dynamic.py']

onnx_config = dict(
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes=dict(masks={0: 'batch', 1: 'num_dets'}))
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
