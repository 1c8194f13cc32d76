# Mapillary -> Cityscapes classes (see mapillary2cityscapes_512x1024.py) with 896x896 crops
# and scale jitter 0.5-2.0, as the published Mask2Former-H pre-training; Cityscapes val
# images are resized to a multiple of 32 after the 2048x1024 test scale.
_base_ = ['./mapillary2cityscapes_512x1024.py']
dataset_type = 'MapillaryCityscapesDataset'
data_root = 'data/Mapillary/'
crop_size = (896, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path=f'{split}/images', seg_map_path=f'{split}/labels'))
            for split in ('training', 'validation')
        ]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
