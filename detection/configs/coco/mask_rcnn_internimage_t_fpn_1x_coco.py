# Mask R-CNN InternImage-T FPN, 1x schedule, COCO.
_base_ = ['../_base_/models/mask_rcnn_internimage_t_fpn.py', '../_base_/internimage_1x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=30, layer_decay_rate=1.0, depths=[4, 4, 18, 4]))
