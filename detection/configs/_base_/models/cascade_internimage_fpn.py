# mmdet's Cascade Mask R-CNN FPN with an InternImage backbone and the published box heads:
# four shared convs + one fc (SyncBN), boxes regressed in decoded form with GIoU loss.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        core_op='DCNv3',
        mlp_ratio=4.0,
        norm_layer='LN',
        layer_scale=1.0,
        with_cp=False,
        out_indices=(0, 1, 2, 3)),
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0)) for stds in stage_target_stds
    ]))
