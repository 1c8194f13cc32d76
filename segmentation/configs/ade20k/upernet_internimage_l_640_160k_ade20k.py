# UperNet + InternImage-L, ADE20K, 640x640 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 53.9 / 54.1 (single / multi-scale).
_base_ = [
    '../_base_/models/upernet_internimage_l.py',
    '../_base_/datasets/ade20k_640.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (640, 640)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
