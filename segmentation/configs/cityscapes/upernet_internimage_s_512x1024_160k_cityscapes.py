# UperNet + InternImage-S, Cityscapes fine, 512x1024 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 82.74 / 83.45 (single / multi-scale).
# The heads have 150 outputs, as the published file and its checkpoint (ADE20K's count):
# classes 19-149 are never targets; see segmentation/README.md for what that means.
_base_ = [
    '../_base_/models/upernet_internimage_s.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 1024)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_s_1k_224.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
