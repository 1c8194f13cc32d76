# UperNet + InternImage-L, Mapillary Vistas (labels mapped to Cityscapes' 19 classes),
# 512x1024 crops, 80k iterations (8 GPUs x 2 images); validated on Cityscapes val.
# Published as the initialisation of cityscapes/upernet_internimage_*_mapillary2cityscapes.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../_base_/datasets/mapillary2cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(
    pretrained=None,  # the base's ResNet weights; InternImage loads its own (init_cfg)
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        channels=160,
        depths=[5, 5, 22, 5],
        groups=[10, 20, 40, 80],
        mlp_ratio=4.0,
        drop_path_rate=0.4,
        norm_layer='LN',
        layer_scale=1.0,
        offset_scale=2.0,
        post_norm=True,
        with_cp=False,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[160, 320, 640, 1280], num_classes=19),
    auxiliary_head=dict(in_channels=640, num_classes=19),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=37, layer_decay_rate=0.94, depths=[5, 5, 22, 5], offset_lr_scale=1.0),
    clip_grad=dict(max_norm=0.1, norm_type=2))
train_cfg = dict(val_interval=8000)
