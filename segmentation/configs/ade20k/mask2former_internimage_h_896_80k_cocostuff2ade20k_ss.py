# Mask2Former + InternImage-H, ADE20K fine-tuning of the COCO-Stuff-164k model, 896x896 crops,
# 80k iterations (16 GPUs x 1 image), single-scale test.
# Published: mIoU 62.5 (single-scale); the _ms config gives 62.9.
# load_from is a published Mask2Former checkpoint: its backbone loads as is; its head was
# saved by the mmdet 2 Mask2Former (other parameter names), so the head starts fresh here.
_base_ = [
    '../_base_/models/mask2former_internimage_h_1024.py',
    '../_base_/datasets/ade20k_896.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmseg_custom', 'mmdet.models'], allow_failed_imports=False)
crop_size = (896, 896)
num_classes = 150
load_from = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/mask2former_internimage_h_896_80k_cocostuff164k.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),  # weights come from load_from
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
optim_wrapper = dict(optimizer=dict(lr=1e-5), clip_grad=dict(max_norm=0.1, norm_type=2))
train_cfg = dict(val_interval=2000)
