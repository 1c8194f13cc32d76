# ADE20K, 640x640 crops (mmseg's ADE20K set-up), as the published configs: 2 images per
# GPU, and test images resized to the test scale then to a multiple of 32. ade20k_512.py
# with the crop-size-dependent steps restated (a child's crop_size does not re-evaluate
# the base's pipelines).
_base_ = ['./ade20k_512.py']
crop_size = (640, 640)
scale = (2560, 640)
train_pipeline = [
    *_base_.train_pipeline[:2],
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    *_base_.train_pipeline[4:],
]
test_pipeline = [
    *_base_.test_pipeline[:1],
    dict(type='Resize', scale=scale, keep_ratio=True),
    *_base_.test_pipeline[2:],
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
