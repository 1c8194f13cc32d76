# DINO-4scale InternImage-H, Objects365 pretraining -> COCO fine-tuning, single scale.
# Iteration-based (20k iterations, 1 image per GPU, large multi-scale input), layer-wise
# lr decay 0.94 and 1e-3 lr on the deformable-attention offsets. The published run starts
# from its Objects365 detector: pass it with --cfg-options load_from=... (checkpoints of the
# published mmdet 2 tree convert to mmdet 3's DINO names on load).
_base_ = ['../_base_/dino_internimage.py']
model = dict(
    backbone=dict(
        channels=320,
        depths=[6, 6, 32, 6],
        groups=[10, 20, 40, 80],
        drop_path_rate=0.5,
        layer_scale=None,
        offset_scale=1.0,
        post_norm=False,
        dw_kernel_size=5,
        res_post_norm=True,
        level2_post_norm=True,
        level2_post_norm_block_ids=[5, 11, 17, 23, 29],
        center_feature_scale=True,
        with_cp=True,
        init_cfg=None),
    neck=dict(in_channels=[640, 1280, 2560]),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=1000)),
    test_cfg=dict(max_per_img=300))

test_scale = (2000, 1000)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1800)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=1, dataset=dict(filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0001),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, num_layers=50, layer_decay_rate=0.94, depths=[6, 6, 32, 6],
                       offset_lr_scale=0.001))
max_iters = 20000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=200)
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
