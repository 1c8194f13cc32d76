# UperNet + InternImage-L, Mapillary Vistas (labels mapped to Cityscapes' 19 classes),
# 512x1024 crops, 80k iterations (8 GPUs x 2 images); validated on Cityscapes val.
# Published as the initialisation of cityscapes/upernet_internimage_*_mapillary2cityscapes.
# The heads have 150 outputs, as the published file and its checkpoint (ADE20K's count):
# classes 19-149 are never targets; see segmentation/README.md for what that means.
_base_ = [
    '../_base_/models/upernet_internimage_l.py',
    '../_base_/datasets/mapillary2cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
train_cfg = dict(val_interval=8000)
