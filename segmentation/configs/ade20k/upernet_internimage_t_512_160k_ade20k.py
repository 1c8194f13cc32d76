# UperNet + InternImage-T, ADE20K, 512x512 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 47.9 / 48.1 (single / multi-scale).
_base_ = [
    '../_base_/models/upernet_internimage_t.py',
    '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
