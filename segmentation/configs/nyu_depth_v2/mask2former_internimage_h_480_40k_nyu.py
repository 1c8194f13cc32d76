# Mask2Former + InternImage-H, NYU-Depth-V2 40-class segmentation, 480x480 crops, 40k iterations
# (16 GPUs x 1 image).
# Published: mIoU 67.1 / 68.1 (single / multi-scale).
_base_ = [
    '../_base_/models/mask2former_internimage_h.py',
    '../_base_/datasets/nyu_depth_v2_480.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['mmseg_custom', 'mmdet.models'], allow_failed_imports=False)
crop_size = (480, 480)
num_classes = 40
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_cfg = dict(val_interval=2000)
