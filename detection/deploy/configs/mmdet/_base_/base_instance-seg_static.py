_base_ = ['./base_static.py']

# masks: one 28x28 (mask head size) probability map per detection; pasting them into the
# image happens outside the graph (mmdeploy's End2EndModel / SDK).
onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
