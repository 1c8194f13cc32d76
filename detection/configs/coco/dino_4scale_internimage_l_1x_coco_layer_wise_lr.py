# DINO-4scale InternImage-L, 1x, COCO, layer-wise lr decay 0.9 over the backbone.
_base_ = ['./dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr.py']
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0001),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, num_layers=37, layer_decay_rate=0.9, depths=[5, 5, 22, 5]))
