# DINO-4scale CB-InternImage-H, Objects365 -> OpenImages v6 (601 classes), single scale;
# class-aware sampling of the training images, OpenImages mAP.
_base_ = ['../_base_/dino_cbinternimage_h_o365_finetune.py']
data_root = 'data/OpenImages/'
model = dict(bbox_head=dict(num_classes=601))
openimages_meta = dict(
    label_file='annotations/class-descriptions-boxable.csv',
    hierarchy_file='annotations/bbox_labels_600_hierarchy.json')
train_dataloader = dict(
    sampler=dict(_delete_=True, type='ClassAwareSampler', num_sample_class=1),
    dataset=dict(
        _delete_=True,
        type='OpenImagesDataset',
        data_root=data_root,
        ann_file='annotations/oidv6-train-annotations-bbox.csv',
        data_prefix=dict(img='OpenImages/train/'),
        meta_file='annotations/train-image-metas.pkl',
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline={{_base_.train_pipeline}},
        **openimages_meta))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='OpenImagesDataset',
        data_root=data_root,
        ann_file='annotations/validation-annotations-bbox.csv',
        data_prefix=dict(img='OpenImages/validation/'),
        meta_file='annotations/validation-image-metas.pkl',
        image_level_ann_file='annotations/validation-annotations-human-imagelabels-boxable.csv',
        test_mode=True,
        pipeline={{_base_.test_pipeline}},
        **openimages_meta))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='OpenImagesMetric', iou_thrs=0.5, ioa_thrs=0.5, use_group_of=True,
                     get_supercategory=True)
test_evaluator = val_evaluator

train_cfg = dict(max_iters=100000, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=3))
