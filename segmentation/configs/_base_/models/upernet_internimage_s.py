# UperNet + InternImage-S: the published backbone variant, the heads' input widths and
# its optimiser (lr, layer-wise lr decay). Configs set the dataset, num_classes, crop
# size and the weights (init_cfg or load_from).
_base_ = ['./upernet_internimage.py']
model = dict(
    backbone=dict(
        channels=80,
        depths=[4, 4, 21, 4],
        groups=[5, 10, 20, 40],
        drop_path_rate=0.3,
        post_norm=True),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320))
optim_wrapper = dict(
    optimizer=dict(lr=6e-5),
    paramwise_cfg=dict(num_layers=33, layer_decay_rate=1.0, depths=[4, 4, 21, 4]))
