# SegFormer (mmseg's segformer_mit-b0 head) on an InternImage backbone: the backbone settings
# shared by every published variant, and the AdamW + layer-wise lr decay optimiser.
# A variant config sets channels/depths/groups/drop_path_rate (and any setting that
# differs, e.g. layer_scale/offset_scale/post_norm), the head's in_channels/num_classes,
# the lr and the constructor's paramwise_cfg.
_base_ = ['mmseg::_base_/models/segformer_mit-b0.py']
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        mlp_ratio=4.0,
        norm_layer='LN',
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=False,
        with_cp=False,
        out_indices=(0, 1, 2, 3)),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', betas=(0.9, 0.999), weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor')
