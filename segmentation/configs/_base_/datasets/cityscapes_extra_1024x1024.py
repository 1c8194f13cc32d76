# Cityscapes fine train + refined train_extra (see cityscapes_extra_512x1024.py) with
# 1024x1024 crops, as the published Mask2Former set-up; test images are resized to a
# multiple of 32 after the 2048x1024 test scale.
_base_ = ['./cityscapes_extra_512x1024.py']
crop_size = (1024, 1024)
train_pipeline = [
    *_base_.train_pipeline[:3],
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
