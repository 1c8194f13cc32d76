# Mask R-CNN InternImage-T FPN, 1x schedule, COCO.
_base_ = ['../_base_/models/mask_rcnn_internimage_fpn.py', '../_base_/internimage_1x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
model = dict(
    backbone=dict(
        channels=64,
        depths=[4, 4, 18, 4],
        groups=[4, 8, 16, 32],
        drop_path_rate=0.2,
        offset_scale=1.0,
        post_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=30, layer_decay_rate=1.0, depths=[4, 4, 18, 4]))
