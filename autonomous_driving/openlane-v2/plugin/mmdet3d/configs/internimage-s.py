# ROAD_BEVFormer with InternImage-S on OpenLane-V2 subset A: the published "InternImage" row
# (OLS 0.325). 7 AV2 ring cameras at 2048x1550 (the portrait front view resized to it by
# ResizeFrontView, all padded to 2048x1568), a 100x200 BEV of 256 channels over
# [-51.2, 51.2] x [-25.6, 25.6] m (3 encoder layers, no temporal queue), 100 lane queries of
# 5 Bezier control points in 3D, 100 traffic-element queries on the front view, lane-lane and
# lane-element relationship heads; AdamW 2e-4, 24 epochs, batch 1 per GPU x 8 GPUs.
#   ./tools/dist_train.sh plugin/mmdet3d/configs/internimage-s.py 8
#   ./tools/dist_test.sh plugin/mmdet3d/configs/internimage-s.py CKPT 8 --eval-options dump=True dump_dir=DIR
# Data: data/OpenLane-V2/ (the published layout) with the collection pickles of
# `python -m autonomous_driving.openlane_v2.collection --root data/OpenLane-V2`.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['autonomous_driving.openlane_v2.registration'], allow_failed_imports=False)

point_cloud_range = [-51.2, -25.6, -2.3, 51.2, 25.6, 1.7]
# published leftovers, read by nothing
voxel_size = [0.2, 0.2, 8]
class_names = ['centerline']
Map_size = [(-50, 50), (-25, 25)]
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
num_cams = 7

_dim_ = 256
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 4
bev_h_ = 100
bev_w_ = 200
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_s_1k_224.pth'

model = dict(
    type='ROAD_BEVFormer',
    video_test_mode=False,
    # the pipeline normalises (the published photometric distortion runs after it) and pads;
    # the preprocessor only batches (it checks the pipeline's mean/std against these)
    data_preprocessor=dict(
        type='MultiViewDataPreprocessor',
        mean=img_norm_cfg['mean'],
        std=img_norm_cfg['std'],
        bgr_to_rgb=img_norm_cfg['to_rgb'],
        pad_size_divisor=32),
    img_backbone=dict(
        type='InternImage',
        core_op='DCNv3',
        channels=80,
        depths=[4, 4, 21, 4],
        groups=[5, 10, 20, 40],
        mlp_ratio=4.,
        drop_path_rate=0.3,
        norm_layer='LN',
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=True,
        with_cp=False,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    img_neck=dict(
        type='FPN',
        in_channels=[80, 160, 320, 640],
        out_channels=_dim_,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=_num_levels_,
        relu_before_extra_convs=True),
    bev_constructor=dict(
        type='BEVFormerConstructer',
        num_feature_levels=_num_levels_,
        num_cams=num_cams,
        embed_dims=_dim_,
        rotate_prev_bev=True,
        use_shift=True,
        use_can_bus=True,
        pc_range=point_cloud_range,
        bev_h=bev_h_,
        bev_w=bev_w_,
        rotate_center=[bev_h_ // 2, bev_w_ // 2],
        encoder=dict(
            type='BEVFormerEncoder',
            num_layers=3,
            pc_range=point_cloud_range,
            num_points_in_pillar=4,
            return_intermediate=False,
            # the ROAD copy of the encoder (spec §2.4): lidar2img alone, normalised by the
            # unpadded front-camera img_shape
            projection='lidar2img',
            image_size='front_img_shape',
            transformerlayers=dict(
                type='BEVFormerLayer',
                attn_cfgs=[
                    # ROAD's TSA applies value_proj twice (spec §2.4)
                    dict(type='TemporalSelfAttention', embed_dims=_dim_, num_levels=1,
                         double_value_proj=True),
                    dict(
                        type='SpatialCrossAttention',
                        embed_dims=_dim_,
                        num_cams=num_cams,
                        pc_range=point_cloud_range,
                        deformable_attention=dict(
                            type='MSDeformableAttention3D', embed_dims=_dim_, num_points=8,
                            num_levels=_num_levels_)),
                ],
                feedforward_channels=_ffn_dim_,
                ffn_dropout=0.1,
                operation_order=('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm'))),
        positional_encoding=dict(
            type='LearnedPositionalEncoding',
            num_feats=_pos_dim_,
            row_num_embed=bev_h_,
            col_num_embed=bev_w_)),
    pts_bbox_head=dict(
        type='LCDeformableDETRHead',
        num_classes=1,
        in_channels=_dim_,
        num_query=100,
        bev_h=bev_h_,
        bev_w=bev_w_,
        pc_range=point_cloud_range,
        sync_cls_avg_factor=False,
        with_box_refine=False,
        with_shared_param=False,
        code_size=15,
        code_weights=[1.0] * 15,
        transformer=dict(
            type='PerceptionTransformer',
            embed_dims=_dim_,
            decoder=dict(
                type='LaneDetectionTransformerDecoder',
                num_layers=6,
                return_intermediate=True,
                transformerlayers=dict(
                    type='CustomDetrTransformerDecoderLayer',
                    attn_cfgs=[
                        dict(type='MultiheadAttention', embed_dims=_dim_, num_heads=8, dropout=0.1),
                        dict(type='CustomMSDeformableAttention', embed_dims=_dim_, num_levels=1),
                    ],
                    feedforward_channels=_ffn_dim_,
                    ffn_dropout=0.1,
                    operation_order=('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm')))),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.5),
        loss_bbox=dict(type='L1Loss', loss_weight=0.0075),
        loss_iou=dict(type='GIoULoss', loss_weight=0.0)),
    bbox_head=dict(
        type='TEDeformableDETRHead',
        num_query=100,
        num_classes=13,
        in_channels=_dim_,
        sync_cls_avg_factor=True,
        with_box_refine=True,
        as_two_stage=False,
        transformer=dict(
            type='DeformableDetrTransformer',
            encoder=dict(
                type='DetrTransformerEncoder',
                num_layers=6,
                transformerlayers=dict(
                    type='BaseTransformerLayer',
                    attn_cfgs=dict(type='MultiScaleDeformableAttention', embed_dims=_dim_),
                    feedforward_channels=_ffn_dim_,
                    ffn_dropout=0.1,
                    operation_order=('self_attn', 'norm', 'ffn', 'norm'))),
            decoder=dict(
                type='DeformableDetrTransformerDecoder',
                num_layers=6,
                return_intermediate=True,
                transformerlayers=dict(
                    type='DetrTransformerDecoderLayer',
                    attn_cfgs=[
                        dict(type='MultiheadAttention', embed_dims=_dim_, num_heads=8, dropout=0.1),
                        dict(type='MultiScaleDeformableAttention', embed_dims=_dim_),
                    ],
                    feedforward_channels=_ffn_dim_,
                    ffn_dropout=0.1,
                    operation_order=('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm')))),
        positional_encoding=dict(
            type='SinePositionalEncoding', num_feats=_pos_dim_, normalize=True, offset=-0.5),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=2.5),
        loss_iou=dict(type='GIoULoss', loss_weight=1.0),
        test_cfg=dict(max_per_img=50)),
    lclc_head=dict(
        type='RelationshipHead',
        in_channels_o1=_dim_,
        in_channels_o2=_dim_,
        shared_param=False,
        loss_rel=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=5)),
    lcte_head=dict(
        type='RelationshipHead',
        in_channels_o1=_dim_,
        in_channels_o2=_dim_,
        shared_param=False,
        loss_rel=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=5)),
    # model training settings
    train_cfg=dict(
        pts=dict(
            grid_size=[512, 512, 1],  # published leftovers: only the assigner is read
            voxel_size=voxel_size,
            point_cloud_range=point_cloud_range,
            out_size_factor=4,
            assigner=dict(
                type='LaneHungarianAssigner',
                cls_cost=dict(type='FocalLossCost', weight=1.5),
                reg_cost=dict(type='LaneL1Cost', weight=0.0075),
                iou_cost=dict(type='IoUCost', weight=0.0),
                pc_range=point_cloud_range)),
        bbox=dict(
            assigner=dict(
                type='HungarianAssigner',
                cls_cost=dict(type='FocalLossCost', weight=1.0),
                reg_cost=dict(type='BBoxL1Cost', weight=2.5, box_format='xywh'),
                iou_cost=dict(type='IoUCost', iou_mode='giou', weight=1.0)))))

dataset_type = 'OpenLaneV2SubsetADataset'
data_root = 'data/OpenLane-V2/'
meta_root = 'data/OpenLane-V2/'
backend_args = None

train_pipeline = [
    dict(type='CustomLoadMultiViewImageFromFiles', to_float32=True, backend_args=backend_args),
    dict(type='NormalizeMultiviewImage', **img_norm_cfg),
    dict(type='PhotoMetricDistortionMultiViewImage'),
    dict(type='ResizeFrontView'),
    dict(type='CustomPadMultiViewImage', size_divisor=32),
    dict(type='CustomParameterizeLane', method='bezier_Endpointfixed', method_para=dict(n_control=5)),
    dict(type='PackOpenLaneInputs',
         keys=['img', 'gt_lc', 'gt_lc_labels', 'gt_te', 'gt_te_labels', 'gt_topology_lclc',
               'gt_topology_lcte']),
]
test_pipeline = [
    dict(type='CustomLoadMultiViewImageFromFiles', to_float32=True, backend_args=backend_args),
    dict(type='NormalizeMultiviewImage', **img_norm_cfg),
    dict(type='ResizeFrontView'),
    dict(type='CustomPadMultiViewImage', size_divisor=32),
    dict(type='PackOpenLaneInputs', keys=['img']),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        meta_root=meta_root,
        collection='data_dict_subset_A_train',
        pipeline=train_pipeline,
        test_mode=False))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        meta_root=meta_root,
        collection='data_dict_subset_A_val',
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

# the published dataset.evaluate; --eval-options dump=True dump_dir=DIR / visualization=True
# visualization_dir=DIR reach it through tools/test.py
val_evaluator = dict(
    type='OpenLaneV2Metric',
    ann_file=meta_root + 'data_dict_subset_A_val.pkl',
    data_root=data_root)
test_evaluator = val_evaluator

# AdamW 2e-4, weight decay 0.01, the backbone at 0.1x the lr, gradients clipped at 35
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2))
# published lr_config: linear warmup over 500 iterations from 1/3, then cosine per epoch down
# to 1e-3 of the base lr
max_epochs = 24
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-3),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)  # 8 GPUs x 1 sample (--autoscale-lr)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=1, max_keep_ckpts=1))
