# mmdet's DINO (4 scales, 900 queries) with an InternImage backbone on levels 1-3, plus
# the published run settings: linear warmup over 500 iterations, best checkpoint kept.
# Leaves set the variant, the ChannelMapper in_channels [2C, 4C, 8C] and the optimizer.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py']
custom_imports = dict(imports=['mmdet_custom'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        mlp_ratio=4.0,
        norm_layer='LN',
        out_indices=(1, 2, 3)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[11], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'))

