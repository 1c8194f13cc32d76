# DINO-4scale CB-InternImage-H, Objects365 -> LVIS v1 (1203 classes), evaluated on minival,
# single scale; class-balanced resampling of the training images.
_base_ = ['../_base_/dino_cbinternimage_h_o365_finetune.py']
data_root = 'data/lvis_v1/'
model = dict(bbox_head=dict(num_classes=1203))
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset=dict(
            type='LVISV1Dataset',
            data_root=data_root,
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='LVISV1Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v1_minival.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True, type='LVISMetric', ann_file=data_root + 'annotations/lvis_v1_minival.json', metric='bbox')
test_evaluator = val_evaluator

train_cfg = dict(max_iters=80000, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500, max_keep_ckpts=10))
