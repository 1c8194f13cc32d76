# SegFormer + InternImage-XL: the published backbone variant, the head's input widths and
# its optimiser (lr, layer-wise lr decay, gradient clipping). Configs set the dataset,
# num_classes, crop size and the weights (init_cfg or load_from).
_base_ = ['./segformer_internimage.py']
model = dict(
    backbone=dict(
        channels=192,
        depths=[5, 5, 24, 5],
        groups=[12, 24, 48, 96],
        drop_path_rate=0.4,
        offset_scale=2.0,
        post_norm=True),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(num_layers=39, layer_decay_rate=0.94, depths=[5, 5, 24, 5], offset_lr_scale=1.0),
    clip_grad=dict(max_norm=0.1, norm_type=2))
