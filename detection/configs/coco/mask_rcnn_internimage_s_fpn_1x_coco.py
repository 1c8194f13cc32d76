# Mask R-CNN InternImage-S FPN, 1x schedule, COCO.
_base_ = ['../_base_/models/mask_rcnn_internimage_fpn.py', '../_base_/internimage_1x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_s_1k_224.pth'
model = dict(
    backbone=dict(
        channels=80,
        depths=[4, 4, 21, 4],
        groups=[5, 10, 20, 40],
        drop_path_rate=0.3,
        offset_scale=1.0,
        post_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[80, 160, 320, 640]))
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=33, layer_decay_rate=1.0, depths=[4, 4, 21, 4]))
