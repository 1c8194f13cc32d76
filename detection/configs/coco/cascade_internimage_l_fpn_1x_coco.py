# Cascade Mask R-CNN InternImage-L FPN, 1x schedule, COCO.
_base_ = ['../_base_/models/cascade_internimage_l_fpn.py', '../_base_/internimage_1x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=37, layer_decay_rate=0.94, depths=[5, 5, 22, 5]))
