# UperNet + InternImage-T, Cityscapes fine, 512x1024 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 82.58 / 83.40 (single / multi-scale).
# num_classes is Cityscapes' 19 (the published file said 150, ADE20K's count, which
# trained a decoder with 131 never-seen classes).
_base_ = [
    '../_base_/models/upernet_internimage_t.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 1024)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))
