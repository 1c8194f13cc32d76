# DINO-4scale InternImage-L, 1x, COCO, backbone at 0.1x lr (mmdet's DINO recipe, wd 0.05).
_base_ = ['../_base_/dino_internimage.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(
    backbone=dict(
        channels=160,
        depths=[5, 5, 22, 5],
        groups=[10, 20, 40, 80],
        drop_path_rate=0.4,
        layer_scale=1.0,
        offset_scale=2.0,
        post_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[320, 640, 1280]))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))  # mmdet's DINO already sets backbone lr_mult=0.1
