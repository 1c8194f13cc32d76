# Cascade Mask R-CNN InternImage-XL FPN, 1x schedule, COCO.
_base_ = ['../_base_/models/cascade_internimage_fpn.py', '../_base_/internimage_1x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_xl_22k_192to384.pth'
model = dict(
    backbone=dict(
        channels=192,
        depths=[5, 5, 24, 5],
        groups=[12, 24, 48, 96],
        drop_path_rate=0.4,
        offset_scale=2.0,
        post_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=39, layer_decay_rate=0.94, depths=[5, 5, 24, 5]))
