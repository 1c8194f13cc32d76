# UperNet + InternImage-T: the published backbone variant, the heads' input widths and
# its optimiser (lr, layer-wise lr decay). Configs set the dataset, num_classes, crop
# size and the weights (init_cfg or load_from).
_base_ = ['./upernet_internimage.py']
model = dict(
    backbone=dict(
        channels=64,
        depths=[4, 4, 18, 4],
        groups=[4, 8, 16, 32],
        drop_path_rate=0.2),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
optim_wrapper = dict(
    optimizer=dict(lr=6e-5),
    paramwise_cfg=dict(num_layers=30, layer_decay_rate=1.0, depths=[4, 4, 18, 4]))
