# Cityscapes fine train + the 20k coarse "train_extra" images with refined labels
# (refinement_final/), 512x1024 crops, 2 images per GPU; validation on fine val.
# The training pipeline is mmseg's Cityscapes one (cityscapes_512x1024.py).
_base_ = ['./cityscapes_512x1024.py']
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
train_pipeline = _base_.train_dataloader.dataset.pipeline
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')),
            dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path='leftImg8bit/train_extra',
                                  seg_map_path='refinement_final/train_extra')),
        ]))
