# Everything but the model for InternImage Mask R-CNN / Cascade on COCO instances, 1x
# (12 epochs): mmdet's dataset, schedule and runtime, the plugin import, AdamW with
# layer-wise lr decay (leaves set paramwise_cfg per variant), 8 GPUs x 2 images.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdet_custom'], allow_failed_imports=False)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor')
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'))
