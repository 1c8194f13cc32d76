# Mask2Former + InternImage-H, Mapillary Vistas (labels mapped to Cityscapes' 19 classes), 896x896
# crops, 80k iterations (16 GPUs x 2 images); validated on Cityscapes val with a sliding window.
# Published as the initialisation of cityscapes/mask2former_internimage_h_1024x1024_80k_mapillary2cityscapes.
_base_ = [
    '../_base_/models/mask2former_internimage_h.py',
    '../_base_/datasets/mapillary2cityscapes_896x896.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmseg_custom', 'mmdet.models'], allow_failed_imports=False)
crop_size = (896, 896)
num_classes = 19
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(clip_grad=dict(max_norm=0.1, norm_type=2))
train_cfg = dict(val_interval=2000)
