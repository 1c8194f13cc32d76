# Mask2Former + InternImage-H, initialised from its Mapillary model (mapillary/), fine-tuned on
# Cityscapes fine + refined train_extra, 1024x1024 crops, 80k iterations (8 GPUs x 2 images),
# sliding-window test.
# Published: mIoU 86.37 (single-scale); the _ms config gives 86.96.
# load_from is a published Mask2Former checkpoint: its backbone loads as is; its head was
# saved by the mmdet 2 Mask2Former (other parameter names), so the head starts fresh here.
_base_ = [
    '../_base_/models/mask2former_internimage_h.py',
    '../_base_/datasets/cityscapes_extra_1024x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmseg_custom', 'mmdet.models'], allow_failed_imports=False)
crop_size = (1024, 1024)
num_classes = 19
load_from = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/mask2former_internimage_h_896x896_80k_mapillary.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),  # weights come from load_from
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(optimizer=dict(lr=1e-5), clip_grad=dict(max_norm=0.1, norm_type=2))
train_cfg = dict(val_interval=2000)
