# DINO-4scale CB-InternImage-H, Objects365 -> PASCAL VOC (20 classes): trained on
# VOC2007 + VOC2012 trainval, evaluated on VOC2007 test (mAP@0.5, area method), lr 5e-5.
_base_ = ['../_base_/dino_cbinternimage_h_o365_finetune.py']
# the published Objects365 detector with its head cut to the 20 VOC classes
load_from = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
             'dino_4scale_cbinternimage_h_objects365_20classes.pth')
data_root = 'data/VOCdevkit/'
model = dict(bbox_head=dict(num_classes=20))
voc_trainval = [
    dict(
        type='VOCDataset',
        data_root=data_root,
        ann_file=f'{year}/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root=f'{year}/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=32),
        pipeline={{_base_.train_pipeline}}) for year in ('VOC2007', 'VOC2012')
]
train_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset', datasets=voc_trainval))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='VOCDataset',
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='area')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=0.00005))
train_cfg = dict(max_iters=20000, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500, max_keep_ckpts=3))
