# UperNet + InternImage-XL, Cityscapes fine, 512x1024 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 83.62 / 84.28 (single / multi-scale).
# num_classes is Cityscapes' 19 (the published file said 150, ADE20K's count, which
# trained a decoder with 131 never-seen classes).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 1024)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_xl_22k_192to384.pth'
model = dict(
    pretrained=None,  # the base's ResNet weights; InternImage loads its own (init_cfg)
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        channels=192,
        depths=[5, 5, 24, 5],
        groups=[12, 24, 48, 96],
        mlp_ratio=4.0,
        drop_path_rate=0.4,
        norm_layer='LN',
        layer_scale=1.0,
        offset_scale=2.0,
        post_norm=True,
        with_cp=False,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 384, 768, 1536], num_classes=19),
    auxiliary_head=dict(in_channels=768, num_classes=19),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=39, layer_decay_rate=0.94, depths=[5, 5, 24, 5], offset_lr_scale=1.0),
    clip_grad=dict(max_norm=0.1, norm_type=2))
