# UperNet + InternImage-B: the published backbone variant, the heads' input widths and
# its optimiser (lr, layer-wise lr decay). Configs set the dataset, num_classes, crop
# size and the weights (init_cfg or load_from).
_base_ = ['./upernet_internimage.py']
model = dict(
    backbone=dict(
        channels=112,
        depths=[4, 4, 21, 4],
        groups=[7, 14, 28, 56],
        drop_path_rate=0.4,
        post_norm=True),
    decode_head=dict(in_channels=[112, 224, 448, 896]),
    auxiliary_head=dict(in_channels=448))
optim_wrapper = dict(
    optimizer=dict(lr=6e-5),
    paramwise_cfg=dict(num_layers=33, layer_decay_rate=1.0, depths=[4, 4, 21, 4]))
