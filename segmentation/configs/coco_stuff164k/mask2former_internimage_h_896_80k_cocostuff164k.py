# Mask2Former + InternImage-H, COCO-Stuff-164k, 896x896 crops, 80k iterations (16 GPUs x 1 image).
# Published: mIoU 52.6 (single-scale); it initialises the ADE20K and COCO-Stuff-10k Mask2Former.
# The published file defined the ImageNet checkpoint but left init_cfg=None; it is used here.
_base_ = [
    '../_base_/models/mask2former_internimage_h_1024.py',
    '../_base_/datasets/coco_stuff164k_896.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmseg_custom', 'mmdet.models'], allow_failed_imports=False)
crop_size = (896, 896)
num_classes = 171
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_cfg = dict(val_interval=8000)
