# Mapillary Vistas v1.2 (training + validation images) with labels mapped onto Cityscapes'
# 19 classes (MapillaryCityscapesDataset, mmseg_custom), 512x1024 crops, 2 images per GPU;
# validated on Cityscapes val, as the published Mapillary pre-training.
_base_ = ['./cityscapes_512x1024.py']
dataset_type = 'MapillaryCityscapesDataset'
data_root = 'data/Mapillary/'
crop_size = (512, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
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
