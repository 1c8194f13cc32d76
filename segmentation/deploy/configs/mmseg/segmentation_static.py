_base_ = ['../../../../dense_common/deploy_configs/onnx_config.py']

# with_argmax: the graph ends in the per-pixel class index (output (N, 1, H, W), int64)
# instead of the (N, num_classes, H, W) scores.
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
