# mmdet's Mask R-CNN FPN with an InternImage backbone; leaves set the variant
# (channels, depths, groups, drop_path_rate, offset_scale, post_norm, init_cfg) and the
# FPN in_channels [C, 2C, 4C, 8C].
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        mlp_ratio=4.0,
        norm_layer='LN',
        layer_scale=1.0,
        with_cp=False,
        out_indices=(0, 1, 2, 3)))
