# UperNet + InternImage-XL, initialised from its Mapillary model (mapillary/), fine-tuned
# on Cityscapes fine + refined train_extra, 512x1024 crops, 160k iterations (8 GPUs x 2 images).
# Published: mIoU 86.20 / 86.42 (single / multi-scale).
# The heads have 150 outputs, as the published file and its checkpoint (ADE20K's count):
# classes 19-149 are never targets; see segmentation/README.md for what that means.
_base_ = [
    '../_base_/models/upernet_internimage_xl.py',
    '../_base_/datasets/cityscapes_extra_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (512, 1024)
load_from = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/upernet_internimage_xl_512x1024_80k_mapillary.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
train_cfg = dict(val_interval=4000)
