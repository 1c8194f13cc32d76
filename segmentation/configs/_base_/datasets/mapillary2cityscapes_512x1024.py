# Mapillary Vistas v1.2 (training + validation images) with labels mapped onto Cityscapes'
# 19 classes (MapillaryCityscapesDataset, mmseg_custom), 512x1024 crops, 2 images per GPU;
# validated on Cityscapes val, as the published Mapillary pre-training: mmseg's Cityscapes
# pipeline (cityscapes_512x1024.py) with scale jitter 0.5-1.0.
_base_ = ['./cityscapes_512x1024.py']
dataset_type = 'MapillaryCityscapesDataset'
data_root = 'data/Mapillary/'
train_pipeline = [
    *_base_.train_dataloader.dataset.pipeline[:2],
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 1.0), keep_ratio=True),
    *_base_.train_dataloader.dataset.pipeline[3:],
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
