# Mapillary -> Cityscapes classes (see mapillary2cityscapes_512x1024.py) with 896x896 crops
# and scale jitter 0.5-2.0, as the published Mask2Former-H pre-training; Cityscapes val
# images are resized to a multiple of 32 after the 2048x1024 test scale.
_base_ = ['./mapillary2cityscapes_512x1024.py']
crop_size = (896, 896)
train_pipeline = [
    *_base_.train_pipeline[:2],
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    *_base_.train_pipeline[4:],
]
test_pipeline = [
    *_base_.val_dataloader.dataset.pipeline[:2],
    dict(type='ResizeToMultiple', size_divisor=32),
    *_base_.val_dataloader.dataset.pipeline[2:],
]
train_dataloader = dict(
    dataset=dict(
        datasets=[dict(d, pipeline=train_pipeline) for d in _base_.train_dataloader.dataset.datasets]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
