# UperNet + InternImage-L: the published backbone variant, the heads' input widths and
# its optimiser (lr, layer-wise lr decay, gradient clipping). Configs set the dataset,
# num_classes, crop size and the weights (init_cfg or load_from).
_base_ = ['./upernet_internimage.py']
model = dict(
    backbone=dict(
        channels=160,
        depths=[5, 5, 22, 5],
        groups=[10, 20, 40, 80],
        drop_path_rate=0.4,
        offset_scale=2.0,
        post_norm=True),
    decode_head=dict(in_channels=[160, 320, 640, 1280]),
    auxiliary_head=dict(in_channels=640))
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(num_layers=37, layer_decay_rate=0.94, depths=[5, 5, 22, 5], offset_lr_scale=1.0),
    clip_grad=dict(max_norm=0.1, norm_type=2))
