# DINO-4scale InternImage-T, 1x, COCO, layer-wise lr decay 0.9 over the backbone.
_base_ = ['../_base_/dino_internimage.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
model = dict(
    backbone=dict(
        channels=64,
        depths=[4, 4, 18, 4],
        groups=[4, 8, 16, 32],
        drop_path_rate=0.2,
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=False,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]),
    test_cfg=dict(max_per_img=100))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0001),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, num_layers=30, layer_decay_rate=0.9, depths=[4, 4, 18, 4]))
